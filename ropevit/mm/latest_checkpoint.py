"""Which checkpoint ``--resume`` continues from: the one ``last_checkpoint`` names, if it is readable.

MMEngine's ``find_latest_checkpoint`` returns whatever the pointer says, so a pointer cut by a kill, or
one naming a file that a kill left truncated or that was deleted, makes ``--resume`` fail. The version
here checks the named file (zip central directory, nothing unpickled) and otherwise falls back to the
newest readable ``iter_N.pth`` / ``epoch_N.pth``. ``tools/_common.py`` calls it for ``--resume``;
:mod:`ropevit.mm.runtime` (fix ``'latest_checkpoint'``) puts it where ``Runner(resume=True)`` looks.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import re
from typing import Optional

from mmengine.logging import print_log

from ropevit.fileio import looks_like_torch_file

__all__ = ['find_latest_checkpoint', 'is_readable_checkpoint']

_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def is_readable_checkpoint(path: str) -> bool:
    """Cheap check (nothing unpickled) that ``path`` is a complete torch checkpoint: see
    :func:`ropevit.fileio.looks_like_torch_file`."""
    return looks_like_torch_file(path)


def _numbered_checkpoints(dirs: list[str]) -> list[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``dirs``, highest N first."""
    found: list[tuple[int, str, str]] = []
    for d in dirs:
        with contextlib.suppress(OSError):
            for entry in os.listdir(d):
                m = _CKPT_NAME.match(entry)
                if m:
                    found.append((int(m.group(2)), m.group(1), osp.join(d, entry)))
    return [path for _, _, path in sorted(found, reverse=True)]


def find_latest_checkpoint(path: str) -> Optional[str]:
    """``mmengine.runner.checkpoint.find_latest_checkpoint`` that never returns an unreadable file.

    Reads ``<path>/last_checkpoint``; if it is empty or names a missing or truncated file, warns and
    returns the newest readable ``iter_N.pth``/``epoch_N.pth`` (highest N) next to it or in ``path``.
    """
    pointer = osp.join(path, 'last_checkpoint')
    named = ''
    if osp.exists(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and ('://' in named and not named.startswith('file://')):
            return named  # a remote back end: nothing to check locally
        if named and is_readable_checkpoint(named):
            return named
    else:
        print_log('Did not find last_checkpoint to be resumed.', logger='current')
    dirs = [path] + ([osp.dirname(named)] if named and osp.dirname(named) not in ('', path) else [])
    for cand in _numbered_checkpoints(dirs):
        if is_readable_checkpoint(cand):
            if osp.exists(pointer):
                print_log(f'{pointer} names {named!r}, which is missing or unreadable (interrupted save?); '
                          f'resuming from the newest readable checkpoint {cand} instead.',
                          logger='current', level=30)
            return cand
    if named:
        print_log(f'{pointer} names {named!r}, which is missing or unreadable, and no readable '
                  f'iter_*.pth/epoch_*.pth is in {dirs}: starting from scratch.', logger='current', level=30)
    return None
