"""State-dict helpers shared by the checkpoint converters: unwrap, strip prefixes, the
axial -> mixed frequency conversion, and the strict loader that names every key that did
not fit.

The loading policy (docs/LOADING_WEIGHTS.md): a converter renames a checkpoint into the
model's layout and records in a :class:`ConversionLog` what it dropped on purpose (with
the reason), what it derived (e.g. RoPE-Mixed frequencies from an axial checkpoint), and
what it had to assume. :func:`load_state_dict_checked` then loads and refuses, naming the
keys, anything else that does not fit:

* a shape mismatch (always);
* a model tensor the checkpoint lacks (it would stay at its random init), unless it is
  one of the family's documented expected new keys (e.g. RoPE-Swin's output norms
  ``norm<i>``) or the caller allows it (``allow_missing`` patterns, ``strict=False``);
* a checkpoint tensor the model has no place for, unless allowed (``allow_unexpected``
  patterns, ``strict=False``). An unexpected key means a part of the checkpoint would be
  thrown away without a reason: another depth, another variant, another layout.

Whatever is allowed is still logged at WARNING level, by name.
"""
from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ropevit.layers.rope import axial_frequencies, rope_magnitudes

_LOGGER = logging.getLogger('ropevit')

StateDict = dict[str, torch.Tensor]

#: What a checkpoint was trained with, when its keys cannot tell (init_cfg ``checkpoint_rope``):
#: ``'auto'`` reads it from the keys (learned frequencies: RoPE-Mixed; none: RoPE-Axial);
#: ``'axial'`` / ``'none'`` state it (``'none'``: a plain ViT / Swin without RoPE).
CheckpointRope = Literal['auto', 'axial', 'none']
CHECKPOINT_ROPE: tuple[str, ...] = ('auto', 'axial', 'none')

_MAX_NAMED = 40  # keys named in one message before "... (+N more)"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model (wrong architecture, shapes, layout or variant)."""


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


def check_checkpoint_rope(value: str) -> None:
    """``ValueError`` unless ``value`` is one of :data:`CHECKPOINT_ROPE`."""
    if value not in CHECKPOINT_ROPE:
        raise ValueError(f'checkpoint_rope={value!r} is not supported; allowed: {CHECKPOINT_ROPE}')


# ----------------------------------------------------------------------------- frequencies
def axial_as_mixed(head_dim: int, theta: float, lead: Sequence[int]) -> torch.Tensor:
    """RoPE-Axial frequencies in the RoPE-Mixed layout: ``fx = [m, 0]``, ``fy = [0, m]``
    for every leading index (block, head), so a mixed model computes the axial model's
    angles ``x * m`` (first ``hd / 4`` pairs) and ``y * m`` (the rest), term for term.

    Returns:
        ``[2, *lead, hd // 2]`` float32 (e.g. ``lead = (depth, nh)`` for RoPEViT).
    """
    freqs = axial_frequencies(head_dim, theta)                              # [2, P]
    view = freqs.reshape(2, *([1] * len(lead)), freqs.shape[-1])            # [2, 1.., P]
    return view.expand(2, *lead, freqs.shape[-1]).clone()                   # [2, *lead, P]


def infer_axial_theta(freqs: torch.Tensor, *, default: float) -> Optional[float]:
    """The theta of axial frequencies stored in the mixed layout, or None if they are not axial.

    ``freqs`` ``[2, ..., P]`` is axial when every leading index (head, block) holds
    ``fx = [m, 0]``, ``fy = [0, m]`` with ``m_k = theta ** (-4k / hd)``, ``hd = 2P``
    (zeros to 1e-6: the original RoPE-Swin stores ``m * cos(pi / 2)`` in float32).
    With ``hd == 4`` every theta gives ``m = [1]``; then ``default`` is returned.
    """
    f = freqs.detach().double().reshape(2, -1, freqs.shape[-1])             # [2, L, P]
    P = f.shape[-1]
    if P % 2 or P == 0:
        return None
    Q = P // 2
    fx, fy = f[0], f[1]                                                     # [L, P] each
    zeros_ok = fx[:, Q:].abs().max() <= 1e-6 and fy[:, :Q].abs().max() <= 1e-6
    if not zeros_ok or not torch.allclose(fx[:, :Q], fy[:, Q:], rtol=1e-5, atol=1e-7):
        return None
    mag = fx[:, :Q]                                                         # [L, Q]
    if not torch.allclose(mag, mag[:1].expand_as(mag), rtol=1e-5, atol=1e-7):
        return None
    m = mag[0]
    if abs(m[0].item() - 1.0) > 1e-5:
        return None
    if Q == 1:
        return float(default)
    ratio = (m[1] / m[0]).item()
    if not 0.0 < ratio < 1.0:
        return None
    theta = ratio ** (-Q)                                                   # m_1 = theta ** (-1 / Q)
    expected = rope_magnitudes(2 * P, theta).double()
    if not torch.allclose(m, expected, rtol=1e-4, atol=1e-7):
        return None
    return float(f'{theta:.5g}')                                            # 50.0000x -> 50.0


def same_theta(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4)


# ----------------------------------------------------------------------------- reports
@dataclass
class ConversionLog:
    """What a converter did besides renaming, filled in place (the converter stays pure).

    ``dropped``: checkpoint key -> why the model does not need it (INFO).
    ``converted``: model key -> how it was derived from the checkpoint (INFO).
    ``new_at_init``: model key -> why it legitimately starts at its init for this
    checkpoint (WARNING; e.g. RoPE frequencies when the checkpoint has no RoPE).
    ``hints``: glob pattern -> what keys matching it are and what to set; appended to
    errors and warnings about such keys.
    ``warnings``: assumptions the converter made (WARNING).
    """
    dropped: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)
    new_at_init: dict[str, str] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def conversion_log(log: Optional[ConversionLog], dropped: Optional[dict[str, str]]) -> ConversionLog:
    """The log a converter fills: ``log``, or a new one; a caller's ``dropped`` dict (the
    older interface) becomes its ``dropped`` so the caller sees every entry."""
    log = ConversionLog() if log is None else log
    if dropped is not None:
        dropped.update(log.dropped)
        log.dropped = dropped
    return log


@dataclass
class LoadReport:
    """What a load did. ``missing``: every model key left at init (expected, new or allowed);
    ``unexpected``: checkpoint keys ignored (allowed)."""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)      # key -> why (e.g. "classification head")
    converted: dict[str, str] = field(default_factory=dict)    # key -> how (e.g. axial -> mixed)
    expected_new: dict[str, str] = field(default_factory=dict)  # missing key -> why that is expected
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f'loaded {len(self.loaded)} tensors']
        if self.converted:
            lines.append('converted: ' + _grouped(self.converted))
        if self.dropped:
            lines.append('dropped (expected): ' + _grouped(self.dropped))
        if self.expected_new:
            lines.append('new, at init (expected): ' + _grouped(self.expected_new))
        allowed = [k for k in self.missing if k not in self.expected_new]
        if allowed:
            lines.append('missing in checkpoint (left at init, allowed): ' + name_keys(allowed))
        if self.unexpected:
            lines.append('unexpected in checkpoint (ignored, allowed): ' + name_keys(self.unexpected))
        return '; '.join(lines)


def name_keys(keys: Sequence[str], limit: int = _MAX_NAMED) -> str:
    """``'a, b, c'``, cut after ``limit`` keys with ``' ... (+N more)'``."""
    keys = list(keys)
    text = ', '.join(keys[:limit])
    return text + (f' ... (+{len(keys) - limit} more)' if len(keys) > limit else '')


def _grouped(reasons: Mapping[str, str]) -> str:
    """``reason: key, key; reason: key`` (one entry per distinct reason)."""
    by_reason: dict[str, list[str]] = {}
    for key, why in sorted(reasons.items()):
        by_reason.setdefault(why, []).append(key)
    return '; '.join(f'{name_keys(keys, 8)} ({why})' for why, keys in by_reason.items())


def _patterns(value: Union[None, str, Sequence[str]], name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ValueError(f'{name}={value!r}: allowed a list of glob patterns of state-dict keys, '
                         f'e.g. ["norm*", "blocks.*.attn.*"]')
    return tuple(value)


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _hints_for(keys: Sequence[str], hints: Mapping[str, str]) -> list[str]:
    return [f'{pattern}: {text}' for pattern, text in hints.items() if any(fnmatch.fnmatchcase(k, pattern)
                                                                          for k in keys)]


def load_state_dict_checked(module: nn.Module, state_dict: StateDict, *, source: str = 'checkpoint',
                            dropped: Optional[dict[str, str]] = None, log: Optional[ConversionLog] = None,
                            expected_new: Optional[Mapping[str, str]] = None,
                            allow_missing: Union[None, str, Sequence[str]] = None,
                            allow_unexpected: Union[None, str, Sequence[str]] = None,
                            strict: bool = True, logger: Optional[logging.Logger] = None) -> LoadReport:
    """Load a converted ``state_dict`` into ``module``; refuse, naming the keys, what does not fit.

    Args:
        module: the model.
        state_dict: already in the model's layout (a converter's output).
        source: names the checkpoint in messages (e.g. its path).
        dropped: converter's dropped keys (older interface; ``log.dropped`` is the same).
        log: the converter's :class:`ConversionLog` (dropped, converted, new keys, hints,
            warnings).
        expected_new: glob pattern -> reason for model keys that a checkpoint of this
            family legitimately lacks (each family documents its set, e.g.
            ``ropevit.checkpoint.swin.EXPECTED_NEW_KEYS``); left at init, logged at INFO.
        allow_missing: glob patterns of model keys the caller allows to stay at init.
        allow_unexpected: glob patterns of checkpoint keys (model layout) the caller allows
            to be ignored.
        strict: False allows every missing and unexpected key (shape mismatches stay errors).
        logger: where the summary (INFO) and every allowed omission or assumption (WARNING)
            go; default the ``ropevit`` logger.

    Raises:
        CheckpointMismatchError: a shape differs (names key and both shapes), a model key is
            missing or a checkpoint key is unexpected without being allowed (names them all,
            with the converter's hints on what to set).
    """
    log = conversion_log(log, dropped)
    logger = logger or _LOGGER
    allow_missing = _patterns(allow_missing, 'allow_missing')
    allow_unexpected = _patterns(allow_unexpected, 'allow_unexpected')
    expected_new = dict(expected_new or {})
    own = module.state_dict()
    name = type(module).__name__
    bad_shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if bad_shapes:
        raise CheckpointMismatchError(f'{source} does not fit {name}: shape mismatch for ' + '; '.join(bad_shapes))

    report = LoadReport(dropped=dict(log.dropped), converted=dict(log.converted), warnings=list(log.warnings))
    report.loaded = [k for k in own if k in state_dict]
    report.missing = [k for k in own if k not in state_dict]
    report.unexpected = [k for k in state_dict if k not in own]
    refused_missing, allowed_missing = [], []
    for key in report.missing:
        reason = next((why for pattern, why in expected_new.items() if fnmatch.fnmatchcase(key, pattern)), None)
        if reason is not None:
            report.expected_new[key] = reason
        elif key in log.new_at_init:
            report.expected_new[key] = log.new_at_init[key]
            report.warnings.append(f'{key} starts at its init: {log.new_at_init[key]}')
        elif not strict or _matches(key, allow_missing):
            allowed_missing.append(key)
        else:
            refused_missing.append(key)
    refused_unexpected = [k for k in report.unexpected if strict and not _matches(k, allow_unexpected)]
    allowed_unexpected = [k for k in report.unexpected if k not in refused_unexpected]

    if refused_missing or refused_unexpected:
        parts = [f'{source} does not fit {name}']
        if refused_missing:
            parts.append(f'{len(refused_missing)} model tensors are not in the checkpoint and would stay at '
                         f'their random init: {name_keys(refused_missing)}')
        if refused_unexpected:
            parts.append(f'{len(refused_unexpected)} checkpoint tensors have no place in the model and would '
                         f'be ignored: {name_keys(refused_unexpected)}')
        parts += _hints_for(refused_missing + refused_unexpected, log.hints)
        if not [k for k in report.loaded if k not in log.converted]:
            parts.append(f'nothing fits: the model expects keys like {sorted(own)[:8]}, the checkpoint has '
                         f'keys like {sorted(k for k in state_dict if k not in log.converted)[:8]}')
        parts.append('Nothing was loaded. If the partial load is intended, name the keys in the init_cfg: '
                     'allow_missing=[...] / allow_unexpected=[...] (glob patterns) or strict=False '
                     '(see docs/LOADING_WEIGHTS.md)')
        raise CheckpointMismatchError('. '.join(parts))

    if allowed_missing:
        report.warnings.append(f'{len(allowed_missing)} model tensors are not in the checkpoint and stay at '
                               f'their random init (allowed): {name_keys(allowed_missing)}'
                               + ''.join('; ' + h for h in _hints_for(allowed_missing, log.hints)))
    if allowed_unexpected:
        report.warnings.append(f'{len(allowed_unexpected)} checkpoint tensors are ignored (allowed): '
                               f'{name_keys(allowed_unexpected)}'
                               + ''.join('; ' + h for h in _hints_for(allowed_unexpected, log.hints)))
    for kind, patterns, keys in (('allow_missing', allow_missing, report.missing),
                                 ('allow_unexpected', allow_unexpected, report.unexpected)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(k, pattern) for k in keys):
                report.warnings.append(f'{kind} pattern {pattern!r} matches no key (a typo?)')

    module.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    logger.info('%s -> %s: %s', source, name, report.summary())
    for message in report.warnings:
        logger.warning('%s -> %s: %s', source, name, message)
    return report
