"""The fixes MMEngine 0.10.7 offers no extension point for, turned on by name: one table, one helper.

``import ropevit.mm`` only registers modules. What cannot be a hook or a registered class replaces an
attribute of mmengine / mmcv / torch, and only when asked::

    from ropevit.mm import runtime
    runtime.enable()                     # every fix below; or enable('cpu_amp', ...)
    runtime.disable('latest_checkpoint') # puts back the very objects enable() replaced

A config turns all of them on at load time with
``custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes'])`` (:mod:`ropevit.mm.fixes`);
ropevit's tools call :func:`enable` themselves. Each fix's reason is in its module's docstring and in
docs/RELIABILITY.md:

================== =============================================================================
fix                what it replaces
================== =============================================================================
checkpoint_loading torch's ``weights_only`` allowlist (+ mmengine's checkpoint types) and
                   ``CheckpointLoader``'s local-path loader (:mod:`ropevit.mm.compat`)
latest_checkpoint  ``find_latest_checkpoint`` where ``Runner(resume=True)`` calls it
                   (:mod:`ropevit.mm.latest_checkpoint`)
cpu_amp            ``AmpOptimWrapper.__init__`` and mmcv's ``nms`` / ``roi_align`` for bf16 autocast
                   on the CPU (:mod:`ropevit.mm.cpu_amp`)
cpu_dist           MMEngine's pytorch / slurm launchers and ``MMDistributedDataParallel.__init__``
                   for gloo CPU processes (:mod:`ropevit.mm.cpu_dist`)
================== =============================================================================

Importing this module changes nothing; :func:`enable` and :func:`disable` are idempotent.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

from . import compat, cpu_amp, cpu_dist
from .latest_checkpoint import find_latest_checkpoint

__all__ = ['FIXES', 'Patch', 'enable', 'disable', 'active']


class Patch(NamedTuple):
    """``<owner>.<attribute>`` becomes ``make(original)``. ``owner``: ``'pkg.module'`` or
    ``'pkg.module:Class'``; ``optional``: skipped when the module cannot be imported."""
    owner: str
    attribute: str
    make: Callable[[Any], Any]
    optional: bool = False


def _always(replacement: Any) -> Callable[[Any], Any]:
    return lambda original: replacement


FIXES: dict[str, tuple[Patch, ...]] = {
    'checkpoint_loading': (
        Patch('torch._weights_only_unpickler', '_marked_safe_globals_set', compat.with_mmengine_globals),
        Patch('mmengine.runner.checkpoint:CheckpointLoader', '_schemes', compat.with_local_loader),
    ),
    'latest_checkpoint': (
        Patch('mmengine.runner.checkpoint', 'find_latest_checkpoint', _always(find_latest_checkpoint)),
        Patch('mmengine.runner.runner', 'find_latest_checkpoint', _always(find_latest_checkpoint)),
    ),
    'cpu_amp': (
        Patch('mmengine.optim:AmpOptimWrapper', '__init__', cpu_amp.cpu_amp_init),
        # detectors call these by module global; mmcv without compiled ops has nothing to wrap
        Patch('mmcv.ops.nms', 'nms', cpu_amp.float32_under_cpu_autocast, optional=True),
        Patch('mmcv.ops.roi_align', 'roi_align', cpu_amp.float32_under_cpu_autocast, optional=True),
    ),
    'cpu_dist': (
        Patch('mmengine.dist.utils', '_init_dist_pytorch', cpu_dist.cpu_launcher),
        Patch('mmengine.dist.utils', '_init_dist_slurm', cpu_dist.cpu_launcher),
        Patch('mmengine.model:MMDistributedDataParallel', '__init__', cpu_dist.cpu_ddp_init),
    ),
}

# fix name -> what enable() replaced: (owner object, attribute, original object)
_applied: dict[str, list[tuple[Any, str, Any]]] = {}


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in FIXES]
    if unknown:
        raise ValueError(f'unknown runtime fix {unknown[0]!r}; allowed: {tuple(FIXES)}')
    return names or tuple(FIXES)


def _owner(spec: str) -> Any:
    module, _, cls = spec.partition(':')
    obj = importlib.import_module(module)
    return getattr(obj, cls) if cls else obj


def _apply(patch: Patch) -> tuple[Any, str, Any] | None:
    try:
        owner = _owner(patch.owner)
    except ImportError:
        if patch.optional:
            return None
        raise
    if patch.attribute not in vars(owner):  # the pinned versions define every one of them
        raise AttributeError(f'runtime fix: {patch.owner} has no attribute {patch.attribute!r} of its own '
                             f'(another mmengine / mmcv / torch than docs/RELIABILITY.md was written for?)')
    original = vars(owner)[patch.attribute]
    setattr(owner, patch.attribute, patch.make(original))
    return owner, patch.attribute, original


def _restore(done: list[tuple[Any, str, Any]]) -> None:
    for owner, attribute, original in reversed(done):
        setattr(owner, attribute, original)


def enable(*names: str) -> None:
    """Turn on the named fixes (all when none is named); a fix already on is left as it is."""
    for name in _names(names):
        if name in _applied:
            continue
        done: list[tuple[Any, str, Any]] = []
        try:
            for patch in FIXES[name]:
                applied = _apply(patch)
                if applied is not None:
                    done.append(applied)
        except BaseException:
            _restore(done)  # all of a fix or nothing
            raise
        _applied[name] = done


def disable(*names: str) -> None:
    """Turn off the named fixes (all when none is named): the replaced objects are put back."""
    for name in reversed(_names(names)):
        _restore(_applied.pop(name, []))


def active() -> list[str]:
    """The fixes that are on, in table order."""
    return [name for name in FIXES if name in _applied]
