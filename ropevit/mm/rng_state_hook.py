"""Exact resume: the random-generator states go into every checkpoint and come back on resume.

MMEngine 0.10.7 checkpoints carry no generator state, so a resumed run draws other RPN/RoI samples,
flips, dropout masks and drop-path decisions than the uninterrupted one and ends with other weights.
:class:`RNGStateHook` closes that through MMEngine's own hook points (``before_save_checkpoint``,
``after_load_checkpoint``, ``before_train``). A config turns it on with
``custom_hooks = [dict(type='RNGStateHook')]``; ropevit's configs list it and ropevit's
``tools/train.py`` adds it when a config does not (docs/RELIABILITY.md, section 1).
"""
from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['RNGStateHook']


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(),
                             'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    # MMEngine's resume loads checkpoints with map_location=<device>: generator states must be CPU
    # ByteTensors again (a 'cuda' one fails with "RNG state must be a torch.ByteTensor").
    torch.set_rng_state(state['torch'].cpu())
    if 'numpy' in state:
        np.random.set_state(tuple(state['numpy']))
    if 'python' in state:
        version, internal, gauss = state['python']
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get('cuda')
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


class _RestoreBeforeFetch:
    """Wraps the iter-based loop's data iterator: after ``skip`` batches (the ones MMEngine replays to
    reach the resume point) it restores the RNG state, then unwraps itself."""

    def __init__(self, loop: Any, state: dict[str, Any], skip: int) -> None:
        self._loop, self._inner, self._state, self._left = loop, loop.dataloader_iterator, state, skip

    def __iter__(self) -> '_RestoreBeforeFetch':
        return self

    def __next__(self) -> Any:
        if self._left == 0:
            _set_rng_state(self._state)
            self._loop.dataloader_iterator = self._inner
            return next(self._inner)
        self._left -= 1
        return next(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random-generator states (torch CPU/CUDA, numpy, python) with each checkpoint and
    restore them on resume, right before the first batch after the resume point is fetched.

    That moment is the same in both runs: the uninterrupted run saved the state after iteration N
    and fetches batch N + 1 next; the resumed run first replays N batches (iteration-based loop, to
    restore the data order; the replay advances the generators and creates data-loader iterators,
    which draw from torch's generator), then gets the saved state back and fetches batch N + 1.
    Validation during training runs with the training streams saved and put back, so a resumed run,
    which does not repeat that validation, stays in step.

    Not covered: generators inside data-loader worker processes. They are re-seeded by MMEngine's
    ``worker_init_fn`` whenever workers start, which the replay reproduces for iteration-based
    loops; an epoch-based loop with ``persistent_workers=True`` keeps worker generators running
    across epochs, so its augmentations after a resume differ (statistically equivalent). In
    multi-process runs rank 0's state is saved; all ranks restore it when ranks share one seed
    (``diff_rank_seed=False``, the default), otherwise only rank 0 does.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None
        self._val_stash: Optional[dict[str, Any]] = None

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        # During validation (save_best) the training stream is the stashed one.
        checkpoint.setdefault('meta', {})['rng_state'] = self._val_stash or _rng_state()

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        state = meta.get('rng_state')
        self._pending = dict(state, iter=meta.get('iter'), epoch=meta.get('epoch')) if state else None

    def before_train(self, runner: Any) -> None:
        from mmengine.runner import IterBasedTrainLoop
        state, self._pending = self._pending, None
        # load_from (fine-tuning) leaves iter at 0; only a resume sets it to the checkpoint's.
        if state is None or runner.iter != state['iter'] or runner.iter == 0:
            return
        if get_world_size() > 1 and runner._randomness_cfg.get('diff_rank_seed', False) and runner.rank != 0:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _RestoreBeforeFetch(loop, state, skip=runner.iter)
        elif runner.iter == runner.epoch * len(loop.dataloader):
            # Epoch-based, resumed at an epoch boundary: no replay; the next epoch's data iterator is
            # created after this. (MMEngine restarts an epoch resumed mid-way, so there is no exact
            # state to restore then.)
            _set_rng_state(state)

    def before_val(self, runner: Any) -> None:
        from mmengine.runner import BaseLoop
        # Only validation inside training (runner.val()/test() alone has no built train loop).
        if isinstance(getattr(runner, '_train_loop', None), BaseLoop):
            self._val_stash = _rng_state()

    def after_val(self, runner: Any) -> None:
        if self._val_stash is not None:
            _set_rng_state(self._val_stash)
            self._val_stash = None
