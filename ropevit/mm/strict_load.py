"""Whole-model checkpoints that do not fit the config are an error, not a metric from random weights.

MMEngine 0.10.7 loads ``load_from`` and ``--resume`` checkpoints non-strictly: missing and unexpected
keys are logged and the run goes on, so a checkpoint of another detector (or a backbone-only file
given as ``load_from``) evaluates a partly random model. :class:`StrictLoadHook` uses MMEngine's own
extension point, the ``after_load_checkpoint`` hook that ``Runner.load_checkpoint`` calls (for
``load_from`` and for ``resume``) before the weights go into the model, and raises
:class:`~ropevit.checkpoint.common.CheckpointMismatchError` naming the keys of each part (backbone,
neck, heads) that are missing, unexpected or of another shape.

Opt-in: ropevit's tools add the hook (``tools/train.py``, ``test.py``; ``infer.py`` calls
:func:`check_model_state_dict` directly); a config can list it in ``custom_hooks``
(``dict(type='StrictLoadHook')``; ``custom_imports=['ropevit.mm']`` registers it). ``allow_partial=True`` (the tools' ``--allow-partial-load``)
turns the error into a WARNING that lists the same keys, for deliberate partial loads.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Mapping, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from ropevit.checkpoint.common import CheckpointMismatchError

__all__ = ['StrictLoadHook', 'check_model_state_dict', 'mismatch_report']

# What Runner.load_checkpoint does to the keys before loading (its default revise_keys).
_REVISE_KEYS: tuple[tuple[str, str], ...] = ((r'^module\.', ''),)
_FEW = 8


def _revise(state_dict: Mapping[str, Any], revise_keys: Sequence[tuple[str, str]]) -> dict[str, Any]:
    out = dict(state_dict)
    for pattern, repl in revise_keys:
        out = {re.sub(pattern, repl, k): v for k, v in out.items()}
    return out


def _part(key: str) -> str:
    return key.split('.', 1)[0]


def _grouped(keys: list[str], *, per_part: int = 3) -> str:
    """``backbone 73: backbone.a, backbone.b, ...; neck 16: ...`` (the count and a few keys per part)."""
    by_part: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        by_part[_part(k)].append(k)
    parts = []
    for part, ks in sorted(by_part.items()):
        more = ', ...' if len(ks) > per_part else ''
        parts.append(f'{part} {len(ks)}: {", ".join(ks[:per_part])}{more}')
    return '; '.join(parts[:_FEW]) + (f'; ... ({len(parts)} parts)' if len(parts) > _FEW else '')


def mismatch_report(model: nn.Module, state_dict: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, shape mismatches)`` of a whole-model ``state_dict`` against ``model``."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    shapes = [f'{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})'
              for k in sorted(own) if k in state_dict and hasattr(state_dict[k], 'shape')
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, shapes


def _backbone_only_hint(model: nn.Module, state_dict: Mapping[str, Any]) -> str:
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, nn.Module) or not state_dict:
        return ''
    keys = set(backbone.state_dict())
    if sum(k in keys for k in state_dict) >= 0.5 * len(state_dict):
        return (' It looks like a backbone checkpoint: give it as '
                'model.backbone.init_cfg=dict(type="Pretrained", checkpoint=...) instead.')
    return ''


def check_model_state_dict(model: nn.Module, state_dict: Mapping[str, Any], *, source: str,
                           allow_partial: bool = False,
                           revise_keys: Sequence[tuple[str, str]] = _REVISE_KEYS) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` fits ``model`` exactly.

    Args:
        model: the (unwrapped) model the checkpoint is for.
        state_dict: the checkpoint's weights (``checkpoint['state_dict']``).
        source: the file, for the message.
        allow_partial: warn (listing the same keys) instead of raising.
        revise_keys: ``(pattern, replacement)`` applied to the keys first, as the loader does.
    """
    state_dict = _revise(state_dict, revise_keys)
    missing, unexpected, shapes = mismatch_report(model, state_dict)
    if not (missing or unexpected or shapes):
        return
    what = [f'{name} {len(keys)} keys [{_grouped(keys)}]' for name, keys in
            (('missing', missing), ('unexpected', unexpected)) if keys]
    if shapes:
        what.append(f'{len(shapes)} of another shape [{"; ".join(shapes[:_FEW])}'
                    f'{" ..." if len(shapes) > _FEW else ""}]')
    message = (f'checkpoint {source} does not fit the model {type(model).__name__} of the config: '
               + ', '.join(what) + '.')
    if allow_partial:
        print_log(message + ' Loading the rest (--allow-partial-load): the listed weights keep their '
                  'initial values.', logger='current', level=30)
        return
    raise CheckpointMismatchError(
        message + _backbone_only_hint(model, state_dict)
        + ' Give the checkpoint that was trained with this config, or pass --allow-partial-load '
          '(StrictLoadHook(allow_partial=True)) if a partial load is meant.')


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Refuse ``load_from`` / resume checkpoints that do not fit the model (see module docstring).

    Args:
        allow_partial: log a WARNING naming the keys instead of raising.
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_partial: bool = False) -> None:
        self.allow_partial = allow_partial
        self.source: Optional[str] = None

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        model = runner.model
        # As mmengine.runner.checkpoint.load_state_dict: through DDP wrappers and TTA models.
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            model = model.module
        state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
        source = self.source or str(getattr(runner, '_load_from', None) or 'the checkpoint')
        check_model_state_dict(model, state_dict, source=source, allow_partial=self.allow_partial)
