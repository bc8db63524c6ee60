"""Swin / RoPE-Swin checkpoints -> :class:`ropevit.models.swin.RoPESwin` state dicts.

Accepted layouts (detected from the keys):

* Microsoft / original RoPE-Swin (``{'model': sd}``): ``patch_embed.proj``,
  ``layers.i.blocks.j.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
  attn.rope_freqs, norm2, mlp.fc1, mlp.fc2}``, ``layers.i.downsample.{reduction, norm}``,
  ``norm``, ``head``;
* mmdet / mmseg Swin (``stages.*``, possibly under ``backbone.`` in a detector or
  segmentor checkpoint) and ropevit's own (same layout).

Recomputable buffers (``attn_mask``, ``rope_t_x``, ``rope_t_y``,
``relative_position_index``, fixed axial ``rope_freqs``), the classification ``head``
and the classifier's final ``norm`` are dropped and reported as such.

RoPE variants and position biases (the policy of docs/LOADING_WEIGHTS.md):

* RoPE-Mixed checkpoint (learned ``rope_freqs``) -> mixed model: loaded; -> axial model:
  refused (the frequencies are unexpected: build with ``rope='mixed'``, or drop them
  explicitly with ``allow_unexpected=['*.rope_freqs']``, logged as a WARNING);
  -> ``rope='none'``: refused.
* RoPE-Axial checkpoint -> mixed model, converted exactly and reported: the original
  layout stores the fixed axial frequencies as a ``rope_freqs`` buffer (copied, they are
  the axial function term for term); ropevit's layout stores none (set to
  ``fx = [m, 0], fy = [0, m]`` per block and head with theta 50 or ``axial_theta``).
* A checkpoint with a relative position bias and no frequencies is a plain Swin
  (Microsoft / mmdet) or a RoPE-Swin trained with ``use_rpb=True``: the keys cannot tell.
  It is read as RoPE-Axial with a WARNING unless ``checkpoint_rope`` says which
  (``'none'``: plain; the RoPE-Mixed frequencies then start at their init, with a
  WARNING). Into a model without ``use_rpb`` its bias tables are unexpected: build with
  ``use_rpb=True`` or drop them with ``allow_unexpected=['*.relative_position_bias_table']``.
* A ViT checkpoint is refused (nothing in it fits a Swin).
* An original-layout (Microsoft / naver) checkpoint into a model with
  ``window_rule='mmdet'``: a WARNING that ``window_rule='original'`` reproduces the
  checkpoint's features (the two differ in stages whose grid fits in one window, e.g.
  the last stage at 224).
"""
from __future__ import annotations

import math
import re
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ropevit.layers.rope import axial_frequencies

from .common import (CheckpointMismatchError, CheckpointRope, ConversionLog, StateDict, axial_as_mixed,
                     check_checkpoint_rope, conversion_log, infer_axial_theta, same_theta, unwrap_state_dict)
from .rope_kind import SWIN, frequencyless_kind, mixed_into_axial_hint, warn_plain_into_rope

_RECOMPUTED = ('attn_mask', 'rope_t_x', 'rope_t_y', 'relative_position_index')

#: Model keys a Swin classification checkpoint legitimately lacks (glob -> reason), left at
#: init without an error: the output norms ``norm<i>`` that a detection / segmentation
#: backbone puts on every returned stage (mmdet's ``SwinTransformer`` does the same; the
#: classifier's single final ``norm`` is a different layer and is dropped). Everything else
#: of RoPESwin is in a (RoPE-)Swin ImageNet checkpoint; RoPE-Mixed frequencies of an axial
#: checkpoint are converted, not left at init.
EXPECTED_NEW_KEYS: dict[str, str] = {
    'norm[0-9]*': 'output norm of a detection / segmentation backbone, not in a classification checkpoint',
}

#: The theta of an axial ropevit-layout checkpoint, which stores no frequencies (the paper's
#: RoPE-Swin configs; the original layout stores them, and their theta is read from them).
DEFAULT_AXIAL_THETA = 50.0

_VIT_KEY = re.compile(r'blocks\.\d+\.')


def unfold_order_from_microsoft(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder a patch-merging ``4C`` axis from Microsoft's order to mmdet's.

    Microsoft concatenates the 2x2 neighbours position-major as
    ``[(0,0), (1,0), (0,1), (1,1)] x C`` (``(dy, dx)``); mmdet's ``nn.Unfold`` (and
    ropevit) order is channel-major ``C x [(0,0), (0,1), (1,0), (1,1)]``.
    """
    shape = weight.shape
    c = shape[dim] // 4
    w = weight.unflatten(dim, (4, c))                                   # [..., 4 (ms pos), C, ...]
    w = w.index_select(dim, torch.tensor([0, 2, 1, 3], device=weight.device))  # pos -> (dy, dx) row-major
    return w.transpose(dim, dim + 1).reshape(shape)                    # [..., C * 4, ...]


def _from_microsoft(key: str, value: torch.Tensor) -> tuple[Optional[str], torch.Tensor]:
    """One Microsoft-layout entry -> mmdet layout (None: not a backbone key)."""
    if key.startswith('patch_embed.'):
        return key.replace('patch_embed.proj.', 'patch_embed.projection.'), value
    if not key.startswith('layers.'):
        return None, value
    key = 'stages.' + key[len('layers.'):]
    if '.downsample.' in key:
        if key.endswith('reduction.weight'):
            value = unfold_order_from_microsoft(value, 1)               # [2C, 4C]
        elif '.downsample.norm.' in key:
            value = unfold_order_from_microsoft(value, 0)               # [4C]
        return key, value
    key = key.replace('.attn.', '.attn.w_msa.')
    key = key.replace('.mlp.fc1.', '.ffn.layers.0.0.').replace('.mlp.fc2.', '.ffn.layers.1.')
    return key, value


def resize_bias_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Bicubic resize of a ``[(2ws-1)^2, nh]`` relative position bias table to ``length`` rows."""
    src, dst = math.isqrt(table.shape[0]), math.isqrt(length)
    grid = table.float().t().reshape(1, -1, src, src)                   # [1, nh, 2ws-1, 2ws-1]
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic', align_corners=False)
    return grid.reshape(-1, length).t().contiguous().to(table.dtype)    # [(2ws'-1)^2, nh]


def convert_swin_state_dict(state_dict: dict, model: Optional[nn.Module] = None, *,
                            dropped: Optional[dict[str, str]] = None,
                            log: Optional[ConversionLog] = None,
                            checkpoint_rope: CheckpointRope = 'auto',
                            axial_theta: Optional[float] = None) -> StateDict:
    """Convert a Swin / RoPE-Swin checkpoint to :class:`RoPESwin` keys (pure function).

    Args:
        state_dict: a checkpoint or its state dict (``model``/``state_dict`` wrappers,
            ``module.`` and ``backbone.`` prefixes are removed).
        model: the target ``RoPESwin``. When given, bias tables are resized (bicubic) to
            its window size, fixed axial frequencies are checked against its
            ``rope_theta`` and dropped, and RoPE checkpoints refuse a ``rope='none'`` model.
        dropped: if given, filled with ``{key: reason}`` for every entry left out on purpose.
        log: filled with everything else the conversion did (converted keys, hints,
            assumptions), for :func:`ropevit.checkpoint.common.load_state_dict_checked`.
        checkpoint_rope: what the checkpoint was trained with when the keys cannot tell:
            ``'auto'``, ``'axial'`` or ``'none'`` (a plain Swin); see the module docstring.
        axial_theta: theta of an axial checkpoint that stores no frequencies (default 50;
            an axial model uses its own ``rope_theta``, and a different value is an error).

    Returns:
        The converted state dict (input tensors are not modified).

    Raises:
        CheckpointMismatchError: the checkpoint's RoPE does not fit ``model``, or it is a
            ViT checkpoint.
        ValueError: ``checkpoint_rope`` is not allowed or contradicts the keys.
    """
    check_checkpoint_rope(checkpoint_rope)
    log = conversion_log(log, dropped)
    dropped = log.dropped
    sd = unwrap_state_dict(state_dict)
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    if any(k.startswith('backbone.') for k in sd):
        for k in sd:
            if not k.startswith('backbone.'):
                dropped.setdefault(k.split('.')[0] + '.*', 'not part of the backbone')
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    vit = [k for k in sd if k == 'cls_token' or _VIT_KEY.match(k)]
    if vit:
        raise CheckpointMismatchError(
            f'this is a ViT checkpoint (keys like {sorted(vit)[:4]}), not a Swin one: nothing in it fits '
            f'RoPESwin (expected keys like patch_embed.projection.weight, stages.0.blocks.0.attn.w_msa.qkv.weight). '
            f'Use type="RoPEViT" for it, or a (RoPE-)Swin checkpoint for RoPESwin')
    microsoft = any(k.startswith('layers.') for k in sd)

    out: StateDict = {}
    for key, value in sd.items():
        leaf = key.rsplit('.', 1)[-1]
        if leaf in _RECOMPUTED:
            dropped[key] = 'buffer recomputed from hyper-parameters'
            continue
        if microsoft:
            if key.startswith('head.'):
                dropped[key] = 'classification head'
                continue
            if key.startswith('norm.'):
                dropped[key] = "classifier's final norm (output norms norm<i> start fresh, as in mmdet)"
                continue
            new_key, value = _from_microsoft(key, value)
            if new_key is None:
                out[key] = value        # unknown: kept so that the loader reports it by name
                continue
            key = new_key
        elif key.startswith('head.'):
            dropped[key] = 'classification head'
            continue
        out[key] = value

    if model is not None:
        _fit_rope(out, model, log, checkpoint_rope=checkpoint_rope, axial_theta=axial_theta)
        _fit_to_model(out, model, dropped)
        if microsoft and getattr(model, 'window_rule', 'original') == 'mmdet':
            log.warnings.append(
                'original-layout (Microsoft / naver-ai RoPE-Swin) checkpoint into a model with '
                'window_rule="mmdet": the checkpoint was trained with the original window rule (no shift and a '
                'window of the grid size in a stage whose grid fits in one window, e.g. the last stage at 224), '
                'so its classification features are reproduced only with window_rule="original"; '
                'window_rule="mmdet" is right for mmdet parity and when you fine-tune anyway')
    return out


def _rope_keys(model: nn.Module) -> list[tuple[str, int, int]]:
    """``(state-dict key of rope_freqs, heads, head dim)`` for every block of ``model``."""
    keys = []
    for s, stage in enumerate(model.stages):
        for j, blk in enumerate(stage.blocks):
            attn = blk.attn.w_msa
            keys.append((f'stages.{s}.blocks.{j}.attn.w_msa.rope_freqs', attn.num_heads, attn.head_dim))
    return keys


def _fit_rope(sd: StateDict, model: nn.Module, log: ConversionLog, *, checkpoint_rope: str,
              axial_theta: Optional[float]) -> None:
    """RoPE frequencies and relative position bias of the checkpoint vs the model (in place
    on ``sd``): see the module docstring. The axial -> axial theta check and the dropping of
    fixed axial frequencies are in :func:`_fit_to_model`."""
    rope = getattr(model, 'rope_type', None)
    freq_keys = [k for k in sd if k.endswith('attn.w_msa.rope_freqs')]
    has_rpb = any(k.endswith('relative_position_bias_table') for k in sd)
    if freq_keys and checkpoint_rope == 'none':
        raise ValueError(f'checkpoint_rope="none", but the checkpoint has RoPE frequencies ({freq_keys[0]}, ...); '
                         f'allowed here: "auto"')
    if rope == 'axial' and axial_theta is not None and not same_theta(axial_theta, model.rope_theta):
        raise ValueError(f'axial_rope_theta={axial_theta} differs from the axial model\'s rope_theta='
                         f'{model.rope_theta}; set one of them (an axial model uses its own rope_theta)')
    if has_rpb and not getattr(model, 'use_rpb', False):
        log.hints['*.relative_position_bias_table'] = (
            'relative position bias of a plain Swin (or of a RoPE-Swin trained with use_rpb=True), but the model '
            'has use_rpb=False: build it with use_rpb=True to keep it, or set allow_unexpected='
            '["*.relative_position_bias_table"] to drop it (positions then come from RoPE alone); a plain Swin '
            'also wants checkpoint_rope="none"')
    if getattr(model, 'use_rpb', False) and not has_rpb:
        log.hints['*.relative_position_bias_table'] = (
            'the checkpoint has no relative position bias: build the model with use_rpb=False, or set '
            'allow_missing=["*.relative_position_bias_table"] to learn it from init')
    if freq_keys:
        if rope == 'mixed':
            for key in freq_keys:
                theta = infer_axial_theta(sd[key], default=DEFAULT_AXIAL_THETA)
                if theta is not None:                   # original axial buffer: the axial function as is
                    log.converted[key] = f'axial frequencies converted to mixed (exact), theta={theta:g}'
        elif rope == 'axial':
            mixed = [k for k in freq_keys if infer_axial_theta(sd[k], default=model.rope_theta) is None]
            if mixed:                                   # kept: unexpected unless allowed
                log.hints['*.rope_freqs'] = mixed_into_axial_hint('*.rope_freqs')
        return
    theta = model.rope_theta if rope == 'axial' else (axial_theta or DEFAULT_AXIAL_THETA)
    kind = frequencyless_kind(checkpoint_rope, has_positions=has_rpb, model_rope=rope, theta=theta, family=SWIN,
                              log=log)
    if kind == 'axial' and rope == 'mixed':
        theta = DEFAULT_AXIAL_THETA if axial_theta is None else float(axial_theta)
        own = model.state_dict()
        for key, heads, head_dim in _rope_keys(model):
            sd[key] = axial_as_mixed(head_dim, theta, (heads,)).to(own[key].dtype)       # [2, nh, hd//2]
            log.converted[key] = f'axial frequencies converted to mixed (exact), theta={theta:g}'
    elif kind == 'none' and rope != 'none':
        if rope == 'mixed':
            for key, _, _ in _rope_keys(model):
                log.new_at_init[key] = ('the checkpoint has no RoPE (checkpoint_rope="none"); the RoPE-Mixed '
                                        'frequencies start at their init')
        warn_plain_into_rope(rope, family=SWIN, log=log)


def _fit_to_model(sd: StateDict, model: nn.Module, dropped: dict[str, str]) -> None:
    """Model-dependent steps: RoPE frequencies and bias-table sizes (in place on ``sd``)."""
    own = model.state_dict()
    rope = getattr(model, 'rope_type', None)
    freq_keys = [k for k in sd if k.endswith('attn.w_msa.rope_freqs')]
    if freq_keys and rope == 'none':
        raise CheckpointMismatchError(
            f'the checkpoint has RoPE frequencies ({freq_keys[0]}, ...) but the model has rope="none"; '
            f'build it with rope="mixed" or rope="axial"')
    if rope == 'axial':
        for key in freq_keys:
            stage = model.stages[int(key.split('.')[1])]
            expected = axial_frequencies(stage.head_dim, model.rope_theta)[:, None]  # [2, 1, hd//2]
            got = sd[key].float().cpu()                                  # [2, nh, hd//2]
            if got.dim() != 3 or got.shape[0] != 2 or got.shape[-1] != expected.shape[-1]:
                continue                                                 # reported by the loader (shape)
            theta = infer_axial_theta(got, default=model.rope_theta)
            if theta is None:
                continue                                                 # RoPE-Mixed: unexpected (see _fit_rope)
            if not torch.allclose(got, expected.expand_as(got), atol=1e-6, rtol=1e-4):
                raise CheckpointMismatchError(
                    f'{key}: the checkpoint frequencies are axial RoPE with theta {theta:g}, not with the model\'s '
                    f'rope_theta={model.rope_theta}; build the model with rope_theta={theta:g}')
            del sd[key]
            dropped[key] = f'fixed axial frequencies, rebuilt from rope_theta={model.rope_theta}'
    for key in [k for k in sd if k.endswith('relative_position_bias_table') and k in own]:
        table, target = sd[key], own[key]
        if table.shape[1] == target.shape[1] and table.shape[0] != target.shape[0]:
            sd[key] = resize_bias_table(table, target.shape[0])
    for key in [k for k in sd if re.fullmatch(r'norm\d+\.(weight|bias)', k) and k not in own]:
        dropped[key] = 'output norm of a stage the model does not return (out_indices)'
        del sd[key]
