"""The marker that ties a generated data folder to the generator and the parameters that wrote it.

A generator writes ``ROOT/.ropevit_generated.json`` (``{"generator": ..., "params": {...}, "complete": bool}``)
before its first file and marks it complete after its last. On the next call:

* same generator, same parameters, complete: the folder is reused as it is;
* same generator, other parameters (or an interrupted run, or ``overwrite``): the files that generator wrote
  for the recorded parameters, and only those, are removed, and the set is written again;
* a folder that is not empty and carries no marker of this generator: refused (``FileExistsError``) unless
  ``overwrite``, in which case the set is written into it and nothing else there is touched.

A file the generator did not create is never deleted.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

MARKER_NAME = '.ropevit_generated.json'

#: Relative paths (to ``root``) a generator writes for the given parameters.
OwnedFiles = Callable[[Mapping[str, Any]], Iterable[str]]


def _normalise(params: Mapping[str, Any]) -> dict:
    """The parameters as they read back from json (tuples become lists), so a comparison is exact."""
    return json.loads(json.dumps(dict(params), sort_keys=True))


def read_marker(root: str | os.PathLike) -> Optional[dict]:
    """The marker's content, or None when there is none or it is not a marker this module wrote."""
    path = Path(root) / MARKER_NAME
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not {'generator', 'params', 'complete'} <= set(marker):
        return None
    return marker


def write_marker(root: str | os.PathLike, *, generator: str, params: Mapping[str, Any], complete: bool) -> None:
    path = Path(root) / MARKER_NAME
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(dict(generator=generator, params=_normalise(params), complete=complete),
                              sort_keys=True))
    os.replace(tmp, path)


def generator_params(*, num_train: int, num_val: int, image_size: Sequence[int], seed: int,
                     max_objects: int) -> dict:
    """The checked parameters of a synthetic set, as the marker records them.

    Raises:
        ValueError: naming the value, when ``image_size`` is not ``(H, W)`` with both sides >= 16, a split is
            empty, or ``max_objects < 1``.
    """
    if len(image_size) != 2 or min(int(v) for v in image_size) < 16:
        raise ValueError(f'image_size={tuple(image_size)}: expected (H, W) with both sides >= 16')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train={num_train}, num_val={num_val}: both must be >= 1')
    if max_objects < 1:
        raise ValueError(f'max_objects={max_objects}: must be >= 1')
    return dict(num_train=int(num_train), num_val=int(num_val), image_size=[int(v) for v in image_size],
                seed=int(seed), max_objects=int(max_objects))


def prepare_root(root: str | os.PathLike, *, generator: str, params: Mapping[str, Any], owned: OwnedFiles,
                 overwrite: bool = False, cli_hint: str = '--overwrite') -> bool:
    """Make ``root`` ready for ``generator`` with ``params``.

    Returns:
        True when ``root`` already holds the complete set for ``params`` (and not ``overwrite``): nothing to
        write. False when the caller must write the set; the marker then says "in progress" with ``params``,
        and the caller calls :func:`write_marker` with ``complete=True`` when done.

    Raises:
        FileExistsError: ``root`` is a file, or a non-empty folder without this generator's marker, and not
            ``overwrite``.
    """
    root = Path(root)
    want = _normalise(params)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f'root={str(root)!r} is a file; the {generator} set needs a folder')
    marker = read_marker(root) if root.is_dir() else None
    ours = marker is not None and marker['generator'] == generator
    if ours and marker['complete'] and marker['params'] == want and not overwrite:
        return True
    if ours:
        for rel in owned(marker['params']):                    # what the recorded run wrote, nothing else
            (root / rel).unlink(missing_ok=True)
    elif root.is_dir() and any(root.iterdir()) and not overwrite:
        found = f'a marker of {marker["generator"]!r}' if marker else f'no {MARKER_NAME} marker'
        raise FileExistsError(
            f'root={str(root)!r} is not empty and has {found}: it was not written by {generator}, so it is '
            f'left alone. Choose an empty or new folder, or pass overwrite=True ({cli_hint}) to write the '
            'set into it (files of the same names are replaced, no other file is touched).')
    root.mkdir(parents=True, exist_ok=True)
    write_marker(root, generator=generator, params=want, complete=False)
    return False


def generator_main(make: Callable[..., Path], *, description: str, default_root: str, num_train: int,
                   num_val: int, size: Sequence[int], what: str, argv: Optional[Sequence[str]] = None) -> None:
    """The command line of a generator: ``[root] --num-train --num-val --size H W --seed --overwrite``.

    ``make(root, num_train=, num_val=, image_size=, seed=, overwrite=)`` writes the set; a refused folder or a
    bad value is one argparse error line (exit 2)."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('root', nargs='?', default=default_root)
    parser.add_argument('--num-train', type=int, default=num_train)
    parser.add_argument('--num-val', type=int, default=num_val)
    parser.add_argument('--size', type=int, nargs=2, default=tuple(size), metavar=('H', 'W'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true',
                        help='write into a folder this generator did not make, or regenerate the same set')
    a = parser.parse_args(argv)
    try:
        root = make(a.root, num_train=a.num_train, num_val=a.num_val, image_size=a.size, seed=a.seed,
                    overwrite=a.overwrite)
    except (FileExistsError, ValueError) as e:
        parser.error(str(e))
    print(f'{what} at {root}')
