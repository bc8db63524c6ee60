"""Crash-safe checkpointing: MMEngine's ``CheckpointHook`` with every write atomic and deletions last.

MMEngine 0.10.7's ``CheckpointHook`` leaves three holes that a killed job (pre-emption, the OOM
killer, a lost node) falls into:

1. ``iter_N.pth`` is written in place: a kill mid-write leaves a truncated file under a final name.
2. The ``last_checkpoint`` pointer is rewritten in place (``open(..., 'w')`` truncates first): a kill
   there leaves an empty or cut pointer, and ``--resume`` fails.
3. With ``max_keep_ckpts`` the oldest checkpoint is deleted *before* the new one is written: with
   ``max_keep_ckpts=1`` a kill in between leaves the pointer naming a deleted file.

:class:`AtomicCheckpointHook` takes every option of ``CheckpointHook`` and writes checkpoints through
:func:`ropevit.mm.atomic_save.atomic_saves`, the pointer through :func:`ropevit.fileio.atomic_write`,
and deletes old checkpoints only once the new checkpoint and the pointer are on disk. A config turns
it on with ``default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))`` (the other keys of
the inherited checkpoint hook stay); ropevit's configs do, and ropevit's ``tools/train.py`` swaps a
plain ``CheckpointHook`` for it. Non-local back ends (``s3://``, ...) are left to MMEngine.
"""
from __future__ import annotations

import contextlib
import os.path as osp
from typing import Any, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ropevit.fileio import atomic_write

from .atomic_save import atomic_saves

__all__ = ['AtomicCheckpointHook']


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) whose checkpoints, pointer and clean-up survive a kill at
    any moment: a reader finds the previous checkpoint or the complete new one, and the pointer
    always names a complete checkpoint. See the module docstring."""

    def _is_local(self) -> bool:
        return isinstance(self.file_backend, LocalBackend)

    def _rotate(self, runner: Any, step: int) -> Optional[int]:
        """MMEngine's ``keep_ckpt_ids`` book-keeping for a checkpoint at ``step``; returns the step
        whose checkpoint falls out (deleted by the caller after the save) instead of deleting it."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return None  # no limit, or the same step saved again (best + regular in one epoch)
        dropped = self.keep_ckpt_ids.popleft() if len(self.keep_ckpt_ids) == self.max_keep_ckpts else None
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return dropped

    def _remove(self, step: int) -> None:
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # DeepSpeed writes checkpoints as directories
            self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner: Any, step: int, meta: dict) -> None:
        dropped = self._rotate(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        with atomic_saves(runner) if self._is_local() else contextlib.nullcontext():
            runner.save_checkpoint(self.out_dir, filename, self.file_client_args,
                                   save_optimizer=self.save_optimizer,
                                   save_param_scheduler=self.save_param_scheduler, meta=meta,
                                   by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        with atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
            f.write(self.last_ckpt)
        if dropped is not None:  # only now: the new checkpoint and the pointer naming it are on disk
            self._remove(dropped)

    def _save_best_checkpoint(self, runner: Any, metrics: dict) -> None:
        # best_<metric>_<name>.pth goes through runner.save_checkpoint too: atomic as well.
        with atomic_saves(runner) if self._is_local() else contextlib.nullcontext():
            super()._save_best_checkpoint(runner, metrics)

