"""``runner.save_checkpoint`` so that a reader never sees a partial checkpoint.

MMEngine 0.10.7 writes ``iter_N.pth`` in place (``LocalBackend.put``): a kill mid-write leaves a
truncated file under a final name. Inside :func:`atomic_saves`, the runner's ``save_checkpoint``
writes to a hidden temporary sibling (``.iter_N.pth.<pid>.ropevit-tmp.pth``), which is ``fsync``-ed
and renamed onto the final name (``os.replace``), then the directory is ``fsync``-ed
(:func:`ropevit.fileio.atomic_target`). The checkpoint's content is MMEngine's, byte for byte.

Only for the runner handed to the block and only while it runs (an instance attribute that shadows
the method, removed afterwards): nothing global changes. Used by
:class:`ropevit.mm.checkpoint_hook.AtomicCheckpointHook`.
"""
from __future__ import annotations

import contextlib
import os.path as osp
from typing import Any, Iterator

from mmengine.dist import is_main_process

from ropevit.fileio import atomic_target

__all__ = ['atomic_saves']


@contextlib.contextmanager
def atomic_saves(runner: Any) -> Iterator[None]:
    """Within the block, ``runner.save_checkpoint(out_dir, filename, ...)`` is atomic (local paths)."""
    if 'save_checkpoint' in vars(runner):  # nested: the outer block already made it atomic
        yield
        return
    save = runner.save_checkpoint

    def save_checkpoint(out_dir: str, filename: str, *args: Any, **kwargs: Any) -> None:
        if not is_main_process():  # Runner.save_checkpoint is master_only: nothing is written here
            return save(out_dir, filename, *args, **kwargs)
        with atomic_target(osp.join(out_dir, filename)) as tmp:
            save(osp.dirname(tmp), osp.basename(tmp), *args, **kwargs)

    runner.save_checkpoint = save_checkpoint
    try:
        yield
    finally:
        del runner.save_checkpoint
