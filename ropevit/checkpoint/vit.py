"""RoPE-ViT / DeiT-III checkpoints -> :class:`ropevit.models.vit.RoPEViT` state dicts.

Accepted layouts (detected from the keys):

* **naver-ai/rope-vit originals** (``{'model': sd}``): ``cls_token``, ``pos_embed``
  ``[1, 196, C]`` (APE variants), ``patch_embed.proj``, ``blocks.i.{norm1, attn.qkv,
  attn.proj, norm2, mlp.fc1, mlp.fc2, gamma_1, gamma_2}``, ``norm``, ``head``; RoPE-Mixed
  adds ``freqs`` ``[2, depth, nh * hd / 2]`` and the buffers ``freqs_t_x`` / ``freqs_t_y``;
* **timm's ports** (same keys, ``rope.freqs`` ``[2, depth, nh, hd / 2]``);
* **ropevit / mmengine** checkpoints (``state_dict``, keys possibly under ``backbone.``).

Recomputable buffers (``freqs_t_x``, ``freqs_t_y``, ``rope.*`` tables) and the
classification head (``head.*``, ``fc_norm.*``, ``head_dist.*``, ``dist_token``) are
dropped and reported as such.
"""
from __future__ import annotations

import math
from typing import Optional

from torch import nn

from .common import CheckpointMismatchError, StateDict, strip_prefix, unwrap_state_dict

_HEAD = ('head.', 'fc_norm.', 'head_dist.')
_HEAD_KEYS = ('dist_token',)


def detect_vit_layout(state_dict: StateDict) -> str:
    """``'naver'`` (flat ``freqs``), ``'timm'`` (``rope.freqs`` or no frequencies: axial/none)."""
    if 'freqs' in state_dict or 'freqs_t_x' in state_dict:
        return 'naver'
    return 'timm'


def convert_vit_state_dict(state_dict: dict, model: Optional[nn.Module] = None, *,
                           num_heads: Optional[int] = None,
                           dropped: Optional[dict[str, str]] = None) -> StateDict:
    """Convert a RoPE-ViT checkpoint to :class:`RoPEViT` keys (pure function).

    Args:
        state_dict: a checkpoint or its state dict (``model`` / ``state_dict`` / ``module``
            wrappers, ``module.`` and ``backbone.`` prefixes are removed).
        model: the target ``RoPEViT``. When given, every tensor is checked against its
            shape; ``pos_embed`` is bicubic-resized to the model's pretrain grid if needed;
            the class token / final norm are dropped (and reported) when the model has none;
            a RoPE-Mixed checkpoint for a non-mixed model, or an APE checkpoint for a model
            without ``use_ape``, is an error.
        num_heads: heads, to unflatten the original ``freqs`` when no ``model`` is given
            (default: ``embed_dims // 64``, the head dim of every published RoPE-ViT).
        dropped: filled with ``key -> reason`` for everything left out on purpose.

    Returns:
        The converted state dict (a new dict; input tensors are not modified).

    Raises:
        CheckpointMismatchError: a shape does not fit (names key and both shapes) or the
            checkpoint's RoPE / APE variant differs from the model's.
    """
    dropped = {} if dropped is None else dropped
    sd = unwrap_state_dict(state_dict)
    sd = strip_prefix(strip_prefix(sd, 'module.'), 'backbone.')
    layout = detect_vit_layout(sd)
    own = model.state_dict() if model is not None else None
    if num_heads is None and model is not None:
        num_heads = model.num_heads

    out: StateDict = {}
    for key, value in sd.items():
        if key.startswith(_HEAD) or key in _HEAD_KEYS:
            dropped[key] = 'classification head'
            continue
        if key in ('freqs_t_x', 'freqs_t_y', 'freqs_cis') or (key.startswith('rope.') and key != 'rope.freqs'):
            dropped[key] = 'recomputed from the grid (not a weight)'
            continue
        if key == 'freqs' and layout == 'naver':
            two, depth, flat = value.shape                                  # [2, depth, nh * hd / 2]
            heads = num_heads or max(1, (2 * flat) // 64)
            if flat % heads:
                raise CheckpointMismatchError(f'freqs {tuple(value.shape)}: last dim {flat} is not divisible by '
                                              f'num_heads={heads}')
            key, value = 'rope.freqs', value.reshape(two, depth, heads, flat // heads)  # [2, depth, nh, hd/2]
        out[key] = value

    if own is None:
        return out

    # ---- fit to the model
    if 'rope.freqs' in out and 'rope.freqs' not in own:
        raise CheckpointMismatchError(
            f'checkpoint has RoPE-Mixed frequencies (rope.freqs {tuple(out["rope.freqs"].shape)}) but the model '
            f'has rope={getattr(model, "rope_type", "?")!r}; build it with rope="mixed"')
    if 'pos_embed' in out and 'pos_embed' not in own:
        raise CheckpointMismatchError(
            f'checkpoint has an absolute position embedding (pos_embed {tuple(out["pos_embed"].shape)}) but the '
            f'model has use_ape=False; build it with use_ape=True')
    if 'cls_token' in out and 'cls_token' not in own:
        dropped['cls_token'] = 'model has with_cls_token=False'
        del out['cls_token']
    for key in [k for k in out if k.startswith('norm.') and k not in own]:
        dropped[key] = 'model has final_norm=False'
        del out[key]
    if 'pos_embed' in out and out['pos_embed'].shape != own['pos_embed'].shape:
        pe = out['pos_embed']
        n_src, n_dst = pe.shape[1], own['pos_embed'].shape[1]
        s_src, s_dst = math.isqrt(n_src), math.isqrt(n_dst)
        if s_src * s_src == n_src and s_dst * s_dst == n_dst and pe.shape[2] == own['pos_embed'].shape[2]:
            from ropevit.models.vit import resample_pos_embed
            out['pos_embed'] = resample_pos_embed(pe, (s_src, s_src), (s_dst, s_dst))
    bad = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in out.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointMismatchError(f'checkpoint does not fit {type(model).__name__}: ' + '; '.join(bad))
    return out


def load_vit_checkpoint(model: nn.Module, checkpoint: dict, *, source: str = 'checkpoint'):
    """Convert ``checkpoint`` and load it into ``model`` with a report (see
    :func:`ropevit.checkpoint.common.load_state_dict_checked`)."""
    from .common import load_state_dict_checked
    dropped: dict[str, str] = {}
    state_dict = convert_vit_state_dict(checkpoint, model, dropped=dropped)
    return load_state_dict_checked(model, state_dict, source=source, dropped=dropped)


__all__ = ['convert_vit_state_dict', 'detect_vit_layout', 'load_vit_checkpoint']
