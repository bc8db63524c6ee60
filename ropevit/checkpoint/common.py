"""State-dict helpers shared by the checkpoint converters: unwrap, strip prefixes,
and load with a report that names every key that did not fit."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch
from torch import nn

logger = logging.getLogger('ropevit')

StateDict = dict[str, torch.Tensor]


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model (wrong architecture, shapes or layout)."""


def unwrap_state_dict(ckpt: Mapping) -> StateDict:
    """The state dict inside a checkpoint: ``state_dict`` (mmengine), ``model``
    (naver / DeiT / Swin), ``module`` or the mapping itself."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(ckpt, Mapping) and key in ckpt and isinstance(ckpt[key], Mapping):
            return dict(ckpt[key])
    return dict(ckpt)


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """Keep only keys under ``prefix`` (with it removed) if any key has it; else unchanged."""
    if not any(k.startswith(prefix) for k in state_dict):
        return state_dict
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # key -> why (e.g. "classification head")

    def summary(self) -> str:
        lines = [f'loaded {len(self.loaded)} tensors']
        if self.dropped:
            lines.append('dropped (expected): ' + ', '.join(f'{k} ({why})' for k, why in sorted(self.dropped.items())))
        if self.missing:
            lines.append('missing in checkpoint (left at init): ' + ', '.join(self.missing))
        if self.unexpected:
            lines.append('unexpected in checkpoint (ignored): ' + ', '.join(self.unexpected))
        return '; '.join(lines)


def load_state_dict_checked(module: nn.Module, state_dict: StateDict, *, source: str = 'checkpoint',
                            dropped: Optional[dict[str, str]] = None,
                            min_loaded_fraction: float = 0.5) -> LoadReport:
    """Load ``state_dict`` into ``module`` non-strictly, but never silently.

    Raises:
        CheckpointMismatchError: a shape differs (names key and both shapes), or fewer
        than ``min_loaded_fraction`` of the module's tensors were found in the checkpoint
        (names what was expected and what was found).
    """
    own = module.state_dict()
    report = LoadReport(dropped=dict(dropped or {}))
    bad_shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if bad_shapes:
        raise CheckpointMismatchError(
            f'{source} does not fit {type(module).__name__}: shape mismatch for ' + '; '.join(bad_shapes))
    report.loaded = [k for k in own if k in state_dict]
    report.missing = [k for k in own if k not in state_dict]
    report.unexpected = [k for k in state_dict if k not in own]
    if len(report.loaded) < min_loaded_fraction * max(len(own), 1):
        raise CheckpointMismatchError(
            f'{source} matches only {len(report.loaded)}/{len(own)} tensors of {type(module).__name__}. '
            f'Expected keys like {sorted(own)[:8]}, found keys like {sorted(state_dict)[:8]}. '
            f'Missing: {report.missing[:20]}{" ..." if len(report.missing) > 20 else ""}')
    module.load_state_dict(state_dict, strict=False)
    logger.info('%s -> %s: %s', source, type(module).__name__, report.summary())
    return report
