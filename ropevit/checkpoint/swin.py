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
"""
from __future__ import annotations

import math
import re
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .common import CheckpointMismatchError, StateDict, unwrap_state_dict

_RECOMPUTED = ('attn_mask', 'rope_t_x', 'rope_t_y', 'relative_position_index')


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


def _resize_bias_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Bicubic resize of a ``[(2ws-1)^2, nh]`` relative position bias table to ``length`` rows."""
    src, dst = math.isqrt(table.shape[0]), math.isqrt(length)
    grid = table.float().t().reshape(1, -1, src, src)                   # [1, nh, 2ws-1, 2ws-1]
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic', align_corners=False)
    return grid.reshape(-1, length).t().contiguous().to(table.dtype)    # [(2ws'-1)^2, nh]


def convert_swin_state_dict(state_dict: dict, model: Optional[nn.Module] = None, *,
                            dropped: Optional[dict[str, str]] = None) -> StateDict:
    """Convert a Swin / RoPE-Swin checkpoint to :class:`RoPESwin` keys (pure function).

    Args:
        state_dict: a checkpoint or its state dict (``model``/``state_dict`` wrappers,
            ``module.`` and ``backbone.`` prefixes are removed).
        model: the target ``RoPESwin``. When given, bias tables are resized (bicubic) to
            its window size, fixed axial frequencies are checked against its
            ``rope_theta`` and dropped, and RoPE checkpoints refuse a ``rope='none'`` model.
        dropped: if given, filled with ``{key: reason}`` for every entry left out on purpose.

    Returns:
        The converted state dict (input tensors are not modified).

    Raises:
        CheckpointMismatchError: the checkpoint's RoPE does not fit ``model``.
    """
    dropped = {} if dropped is None else dropped
    sd = unwrap_state_dict(state_dict)
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    if any(k.startswith('backbone.') for k in sd):
        for k in sd:
            if not k.startswith('backbone.'):
                dropped.setdefault(k.split('.')[0] + '.*', 'not part of the backbone')
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
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
        _fit_to_model(out, model, dropped)
    return out


def _fit_to_model(sd: StateDict, model: nn.Module, dropped: dict[str, str]) -> None:
    """Model-dependent steps: RoPE frequencies and bias-table sizes (in place on ``sd``)."""
    own = model.state_dict()
    rope = getattr(model, 'rope', None)
    freq_keys = [k for k in sd if k.endswith('attn.w_msa.rope_freqs')]
    if freq_keys and rope == 'none':
        raise CheckpointMismatchError(
            f'the checkpoint has RoPE frequencies ({freq_keys[0]}, ...) but the model has rope="none"; '
            f'build it with rope="mixed" or rope="axial"')
    if rope == 'axial':
        for key in freq_keys:
            stage = model.stages[int(key.split('.')[1])]
            expected = stage.axial_freqs.float().cpu()[:, None]          # [2, 1, hd//2]
            got = sd[key].float().cpu()                                  # [2, nh, hd//2]
            if got.dim() != 3 or got.shape[0] != 2 or got.shape[-1] != expected.shape[-1] or not torch.allclose(
                    got, expected.expand_as(got), atol=1e-6, rtol=1e-4):
                raise CheckpointMismatchError(
                    f'{key}: the checkpoint frequencies are not axial RoPE with rope_theta={model.rope_theta} '
                    f'(a RoPE-Mixed checkpoint needs rope="mixed"; an axial one trained with another theta '
                    f'needs that rope_theta)')
            del sd[key]
            dropped[key] = f'fixed axial frequencies, rebuilt from rope_theta={model.rope_theta}'
    for key in [k for k in sd if k.endswith('relative_position_bias_table') and k in own]:
        table, target = sd[key], own[key]
        if table.shape[1] == target.shape[1] and table.shape[0] != target.shape[0]:
            sd[key] = _resize_bias_table(table, target.shape[0])
    for key in [k for k in sd if re.fullmatch(r'norm\d+\.(weight|bias)', k) and k not in own]:
        dropped[key] = 'output norm of a stage the model does not return (out_indices)'
        del sd[key]
