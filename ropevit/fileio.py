"""Writing files so that a reader never sees a partial one, and refusing to write onto inputs.

Plain Python (no torch, no mmengine): the command-line tools write every output through
:func:`atomic_write`, a temporary sibling that is ``fsync``-ed and renamed onto the final name
(``os.replace``, atomic on POSIX and Windows within one file system). A killed tool leaves either
the old file or the complete new one, plus at most a hidden ``.<name>.<pid>.ropevit-tmp`` that the
next write of that name removes. (:class:`ropevit.mm.checkpoint_hook.AtomicCheckpointHook`, through
:mod:`ropevit.mm.atomic_save`, does the same for MMEngine's checkpoints.)
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
from typing import IO, Iterable, Iterator, Literal, Optional

__all__ = ['atomic_write', 'atomic_target', 'write_bytes_atomic', 'looks_like_torch_file', 'same_file', 'refuse_overwriting_inputs',
           'OutputOverInputError']

_TMP_TAG = '.ropevit-tmp'


class OutputOverInputError(ValueError):
    """An output path of a tool is (or would replace) one of its inputs."""


def _fsync_dir(dirpath: str) -> None:
    try:
        fd = os.open(dirpath or '.', os.O_RDONLY)
    except OSError:  # Windows cannot open folders; the rename is atomic there all the same
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _remove_stale_tmp(dirpath: str, name: str) -> None:
    prefix = f'.{name}.'
    with contextlib.suppress(OSError):
        for entry in os.listdir(dirpath):
            if entry.startswith(prefix) and _TMP_TAG in entry:
                with contextlib.suppress(OSError):
                    os.remove(osp.join(dirpath, entry))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: Literal['w', 'wb'] = 'wb', *,
                 encoding: Optional[str] = 'utf-8') -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success fsync it and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_write mode must be "w" or "wb", got {mode!r}')
    dirpath, name = osp.split(osp.abspath(os.fspath(path)))
    os.makedirs(dirpath, exist_ok=True)
    _remove_stale_tmp(dirpath, name)
    tmp = osp.join(dirpath, f'.{name}.{os.getpid()}{_TMP_TAG}')
    f = open(tmp, mode, encoding=None if 'b' in mode else encoding)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, osp.join(dirpath, name))
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[str]:
    """A temporary sibling *path* (same extension) for writers that take a file name
    (``savefig``, ``cv2.imwrite``); renamed onto ``path`` when the block succeeds."""
    dirpath, name = osp.split(osp.abspath(os.fspath(path)))
    os.makedirs(dirpath, exist_ok=True)
    _remove_stale_tmp(dirpath, name)
    ext = osp.splitext(name)[1]
    tmp = osp.join(dirpath, f'.{name}.{os.getpid()}{_TMP_TAG}{ext}')
    try:
        yield tmp
        if not osp.exists(tmp):
            return  # the writer wrote nothing (e.g. a plot with nothing to show): neither is ``path``
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, osp.join(dirpath, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(dirpath)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, 'wb') as f:
        f.write(data)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """``a`` and ``b`` name one file (after symlinks; also for hard links when both exist)."""
    a, b = os.fspath(a), os.fspath(b)
    if osp.exists(a) and osp.exists(b):
        return osp.samefile(a, b)
    return osp.realpath(a) == osp.realpath(b)


def refuse_overwriting_inputs(outputs: Iterable[str], inputs: Iterable[str], *, what: str = 'output') -> None:
    """Raise :class:`OutputOverInputError` if an output would replace an input file.

    Args:
        outputs: the paths a tool is about to write.
        inputs: the files it reads (config, checkpoint, images, ...).
        what: how the message calls the outputs (e.g. ``'--out-dir output'``).
    """
    inputs = [i for i in inputs if i]
    for out in outputs:
        for inp in inputs:
            if same_file(out, inp):
                raise OutputOverInputError(
                    f'{what} {out!r} is the input {inp!r}; writing it would destroy the input. '
                    f'Choose another output path.')


def looks_like_torch_file(path: str | os.PathLike) -> bool:
    """Cheap test (no torch, no unpickling) that ``path`` can be a ``torch.save`` file: a zip archive
    whose central directory is intact and holds ``data.pkl`` (torch >= 1.6), or a legacy pickle
    (starts with the pickle protocol opcode). Random bytes, empty and truncated zip files fail."""
    import zipfile
    path = os.fspath(path)
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return False
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                return any(n.endswith('data.pkl') for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    with open(path, 'rb') as f:
        head = f.read(2)
    return head[:1] == b'\x80' and head[1:2] in (b'\x02', b'\x03', b'\x04', b'\x05')
