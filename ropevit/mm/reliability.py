"""Crash-safe checkpoints and exact resume for MMEngine runs. Applied on ``import ropevit.mm``.

MMEngine 0.10.7 leaves three holes that a killed job (pre-emption, OOM killer, a lost node) can fall into:

1. ``save_checkpoint`` writes ``iter_N.pth`` in place (``LocalBackend.put``) and ``CheckpointHook`` then
   rewrites the ``last_checkpoint`` pointer in place (``open(..., 'w')`` truncates first). A SIGKILL
   during the first leaves a truncated ``iter_N.pth`` under a final name; during the second an empty or
   cut pointer, and ``--resume`` then fails (``find_latest_checkpoint`` returns ``''``).
2. With ``max_keep_ckpts``, ``CheckpointHook`` deletes the oldest checkpoint *before* writing the new one;
   with ``max_keep_ckpts=1`` a kill in between leaves the pointer naming a deleted file.
3. Checkpoints carry no random-number-generator state, so a resumed run draws different random numbers
   than the uninterrupted one (RPN/RoI samplers, dropout, drop-path) and ends with different weights.

What this module does (each piece documented in ``docs/RELIABILITY.md`` with its test):

* :func:`atomic_write` / :func:`save_checkpoint_atomic`: write to a hidden temporary file in the same
  directory, ``fsync`` it, ``os.replace`` it onto the final name, ``fsync`` the directory. A reader sees
  the old file or the complete new one, never a partial one (also across a power loss, given a
  file system that honours fsync). Non-local back ends (``s3://``, ``pavi://``...) are left to MMEngine.
* The pointer write in ``mmengine.hooks.checkpoint_hook`` goes through :func:`atomic_write` (the module's
  ``open`` is shadowed for the one file named ``last_checkpoint``; every other open is untouched).
* ``CheckpointHook._save_checkpoint_with_step`` is wrapped so that old checkpoints are deleted only after
  the new checkpoint and the pointer are on disk.
* ``find_latest_checkpoint`` checks what the pointer names; if it is missing or unreadable (written by a
  run without these fixes) it warns and falls back to the newest readable ``iter_*.pth``/``epoch_*.pth``.
* :class:`RNGStateHook` stores the torch (CPU, CUDA), numpy and python generator states in
  ``meta['rng_state']`` and puts them back on resume, right before the first batch after the resume
  point is fetched. It is added to every Runner (unless a config already lists it).

:func:`revert` undoes all of it (tests use it to show each fix is load-bearing).
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import random
import re
from typing import IO, Any, Callable, Optional

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ropevit.fileio import atomic_write, looks_like_torch_file

from . import cpu_amp, cpu_dist  # noqa: F401  (--amp and torchrun/DDP on CPU-only machines)

__all__ = ['atomic_write', 'save_checkpoint_atomic', 'is_readable_checkpoint', 'find_latest_checkpoint',
           'RNGStateHook', 'apply', 'revert']

_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


# ----------------------------------------------------------------------------------------------- atomic files
def _is_local(filename: str, backend_args: Optional[dict], file_client_args: Optional[dict]) -> bool:
    if backend_args or file_client_args:
        return False
    return '://' not in filename or filename.startswith('file://')


def save_checkpoint_atomic(checkpoint: dict, filename: str, file_client_args: Optional[dict] = None,
                           backend_args: Optional[dict] = None) -> None:
    """Drop-in for ``mmengine.runner.checkpoint.save_checkpoint``: atomic for local paths."""
    filename = os.fspath(filename)
    if not _is_local(filename, backend_args, file_client_args):
        return _ORIGINAL['save_checkpoint'](checkpoint, filename, file_client_args=file_client_args,
                                            backend_args=backend_args)
    if filename.startswith('file://'):
        filename = filename[len('file://'):]
    with atomic_write(filename, 'wb') as f:
        torch.save(checkpoint, f)  # streamed: no second in-memory copy as mmengine's BytesIO makes


def is_readable_checkpoint(path: str) -> bool:
    """Cheap check (nothing unpickled) that ``path`` is a complete torch checkpoint: see
    :func:`ropevit.fileio.looks_like_torch_file`."""
    return looks_like_torch_file(path)


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
    candidates: list[tuple[int, str, str]] = []
    for d in dirs:
        with contextlib.suppress(OSError):
            for entry in os.listdir(d):
                m = _CKPT_NAME.match(entry)
                if m:
                    candidates.append((int(m.group(2)), m.group(1), osp.join(d, entry)))
    for _, _, cand in sorted(candidates, reverse=True):
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


# ---------------------------------------------------------------------------------------- CheckpointHook fixes
def _hook_module_open(file: Any, mode: str = 'r', *args: Any, **kwargs: Any) -> IO:
    """``open`` as seen by ``mmengine.hooks.checkpoint_hook``: the pointer write is atomic."""
    if isinstance(file, (str, os.PathLike)) and osp.basename(os.fspath(file)) == 'last_checkpoint' \
            and mode == 'w' and not args:
        return atomic_write(file, 'w', encoding=kwargs.get('encoding'))
    return open(file, mode, *args, **kwargs)


class _DeferRemoval:
    """Proxy of a file backend whose ``remove``/``rmtree`` wait until :meth:`flush`."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._pending: list[tuple[str, str]] = []

    def remove(self, filepath: str) -> None:
        self._pending.append(('remove', filepath))

    def rmtree(self, dir_path: str) -> None:
        self._pending.append(('rmtree', dir_path))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def flush(self) -> None:
        for op, p in self._pending:
            getattr(self._backend, op)(p)


def _wrap_save_with_step(original: Callable) -> Callable:
    def _save_checkpoint_with_step(self: Any, runner: Any, step: int, meta: dict) -> None:
        backend = self.file_backend
        deferred = _DeferRemoval(backend)
        self.file_backend = deferred
        try:
            original(self, runner, step, meta)
        finally:
            self.file_backend = backend
        deferred.flush()  # only reached when the new checkpoint and the pointer are written

    _save_checkpoint_with_step.__wrapped__ = original  # type: ignore[attr-defined]
    return _save_checkpoint_with_step


# ----------------------------------------------------------------------------------------------- RNG state
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


def _wrap_register_hooks(original: Callable) -> Callable:
    def register_hooks(self: Any, default_hooks: Any = None, custom_hooks: Any = None) -> None:
        original(self, default_hooks, custom_hooks)
        if not any(isinstance(h, RNGStateHook) for h in self._hooks):
            self.register_hook(RNGStateHook())

    register_hooks.__wrapped__ = original  # type: ignore[attr-defined]
    return register_hooks


# ------------------------------------------------------------------------------------------------ patching
_ORIGINAL: dict[str, Any] = {}


def apply() -> None:
    """Install the fixes (idempotent)."""
    if _ORIGINAL:
        return
    import mmengine.hooks.checkpoint_hook as hook_mod
    import mmengine.runner as runner_pkg
    import mmengine.runner.checkpoint as ckpt_mod
    import mmengine.runner.runner as runner_mod
    from mmengine.hooks import CheckpointHook
    from mmengine.runner import Runner

    _ORIGINAL.update(
        save_checkpoint=ckpt_mod.save_checkpoint, find_latest_checkpoint=ckpt_mod.find_latest_checkpoint,
        save_with_step=CheckpointHook._save_checkpoint_with_step, register_hooks=Runner.register_hooks)
    for mod in (ckpt_mod, runner_mod, runner_pkg):
        mod.save_checkpoint = save_checkpoint_atomic
    for mod in (ckpt_mod, runner_mod):
        mod.find_latest_checkpoint = find_latest_checkpoint
    hook_mod.open = _hook_module_open  # module global shadows the builtin for that module only
    CheckpointHook._save_checkpoint_with_step = _wrap_save_with_step(_ORIGINAL['save_with_step'])
    Runner.register_hooks = _wrap_register_hooks(_ORIGINAL['register_hooks'])


def revert() -> None:
    """Undo :func:`apply` (plain MMEngine checkpointing; used by tests to show each fix matters).

    The CPU distributed fixes stay (:func:`ropevit.mm.cpu_dist.revert` undoes those)."""
    if not _ORIGINAL:
        return
    import mmengine.hooks.checkpoint_hook as hook_mod
    import mmengine.runner as runner_pkg
    import mmengine.runner.checkpoint as ckpt_mod
    import mmengine.runner.runner as runner_mod
    from mmengine.hooks import CheckpointHook
    from mmengine.runner import Runner

    for mod in (ckpt_mod, runner_mod, runner_pkg):
        mod.save_checkpoint = _ORIGINAL['save_checkpoint']
    for mod in (ckpt_mod, runner_mod):
        mod.find_latest_checkpoint = _ORIGINAL['find_latest_checkpoint']
    with contextlib.suppress(AttributeError):
        del hook_mod.open
    CheckpointHook._save_checkpoint_with_step = _ORIGINAL['save_with_step']
    Runner.register_hooks = _ORIGINAL['register_hooks']
    _ORIGINAL.clear()


apply()
