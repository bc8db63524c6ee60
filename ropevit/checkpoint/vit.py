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

RoPE variants (the policy of docs/LOADING_WEIGHTS.md):

* checkpoint RoPE-Mixed (learned frequencies) -> mixed model: loaded; -> axial model:
  refused (``rope.freqs`` is unexpected: build with ``rope='mixed'``, or drop the learned
  frequencies explicitly with ``allow_unexpected=['rope.freqs']``, logged as a WARNING);
  -> ``rope='none'``: refused.
* checkpoint RoPE-Axial (no frequencies: axial tables are recomputed, never saved) ->
  mixed model: the mixed frequencies are set to exactly the axial ones
  (``fx = [m, 0], fy = [0, m]`` for every block and head, theta 100 or
  ``axial_theta``), so the loaded model computes the axial model's function; reported
  as converted.
* A checkpoint without frequencies but with ``pos_embed`` is either RoPE-Axial + APE or a
  plain ViT (DeiT-III, no RoPE): the keys cannot tell. It is read as RoPE-Axial (a WARNING
  says so) unless ``checkpoint_rope`` states which. A plain ViT (``checkpoint_rope='none'``)
  into a RoPE model loads every weight, the RoPE-Mixed frequencies start at their init,
  and a WARNING says the model computes another function than the checkpoint until
  fine-tuned.
* A Swin checkpoint is refused (nothing in it fits a ViT).
"""
from __future__ import annotations

import math
import re
from typing import Optional

import torch
from torch import nn

from .common import (CheckpointMismatchError, CheckpointRope, ConversionLog, StateDict, axial_as_mixed,
                     check_checkpoint_rope, conversion_log, same_theta, strip_prefix, unwrap_state_dict)
from .rope_kind import VIT, frequencyless_kind, mixed_into_axial_hint, warn_plain_into_rope

_HEAD = ('head.', 'fc_norm.', 'head_dist.')
_HEAD_KEYS = ('dist_token',)

#: Model keys a ViT classification checkpoint may legitimately lack (glob -> reason), left at
#: init without an error. Empty on purpose: a RoPE-ViT / DeiT-III ImageNet checkpoint holds
#: every RoPEViT tensor (patch embedding, class token, position embedding, blocks, final
#: norm); the RoPE-Mixed frequencies of an axial checkpoint are converted, not left at init;
#: options that add tensors (``use_ape`` without an APE checkpoint) are errors with a hint,
#: because a freshly initialised position embedding is not what a user loading weights expects.
EXPECTED_NEW_KEYS: dict[str, str] = {}

#: The theta of an axial checkpoint, which stores no frequencies (the paper / timm).
DEFAULT_AXIAL_THETA = 100.0

_SWIN_KEY = re.compile(r'(layers|stages)\.\d+\.(blocks\.\d+|downsample)\.')


def detect_vit_layout(state_dict: StateDict) -> str:
    """``'naver'`` (flat ``freqs``), ``'dinov3'`` (timm's DINOv3 port: ``reg_token``, rotate-half
    pairs), ``'eva02'`` (timm's EVA-02: split ``q_proj`` / ``k_proj`` / ``v_proj`` or a fused qkv with
    ``q_bias`` / ``v_bias``, y pairs first,
    a class-token slot in ``pos_embed``), ``'timm'`` (``rope.freqs`` or no frequencies)."""
    if 'freqs' in state_dict or 'freqs_t_x' in state_dict:
        return 'naver'
    if 'reg_token' in state_dict and 'pos_embed' not in state_dict:
        return 'dinov3'
    if any(re.fullmatch(r'blocks\.\d+\.attn\.(q_proj\.weight|q_bias)', k) for k in state_dict):
        return 'eva02'                                  # split q/k/v (B, L) or fused qkv with q/v biases (Ti, S)
    return 'timm'


def rotate_half_to_interleaved(head_dim: int) -> torch.Tensor:
    """Channel order that turns a head of timm's DINOv3 layout into RoPEViT's.

    DINOv3 rotates channel pairs ``(j, j + hd/2)`` ("rotate half"), pair ``j`` by ``y * m_j`` for
    ``j < hd/4`` and by ``x * m_(j - hd/4)`` after (``'ij'`` grid: rows first). RoPEViT rotates
    ``(2p, 2p + 1)`` by ``x * m_p`` for ``p < hd/4`` and ``y * m_(p - hd/4)`` after. Permuting the
    q and k rows of the qkv projection by the returned index (new channel ``c`` = old ``perm[c]``)
    gives the same attention: q . k is invariant to one permutation of both, and v is untouched.

    Returns:
        ``[hd]`` long tensor.
    """
    q = head_dim // 4
    perm = []
    for p in range(head_dim // 2):
        j = q + p if p < q else p - q                 # the DINOv3 pair with our pair p's angle
        perm += [j, j + head_dim // 2]
    return torch.tensor(perm)


def yx_to_xy_pairs(head_dim: int) -> torch.Tensor:
    """Channel order for timm's EVA-02 (``RotaryEmbeddingCat``, ``'ij'`` grid): interleaved pairs
    like RoPEViT's, but the first ``hd/4`` pairs rotate with y and the rest with x."""
    q = head_dim // 4
    perm = []
    for p in range(head_dim // 2):
        j = q + p if p < q else p - q
        perm += [2 * j, 2 * j + 1]
    return torch.tensor(perm)


def _permute_qk_rows(value: torch.Tensor, num_heads: int, layout: str = 'dinov3') -> torch.Tensor:
    """qkv weight ``[3C, C]`` or bias ``[3C]``: q and k rows permuted per head (see above)."""
    three_c = value.shape[0]
    c = three_c // 3
    hd = c // num_heads
    perm = rotate_half_to_interleaved(hd) if layout == 'dinov3' else yx_to_xy_pairs(hd)
    rows = value.reshape(3, num_heads, hd, *value.shape[1:])          # [3, nh, hd, ...]
    qk = rows[:2].index_select(2, perm)
    return torch.cat([qk, rows[2:]]).reshape(value.shape)


def _merge_split_qkv(sd: StateDict, log: ConversionLog) -> StateDict:
    """timm's split attention inputs -> one ``attn.qkv`` (k has no bias: zeros, which attention
    cannot see): EVA-02's ``attn.{q,k,v}_proj.*`` and DINOv3-qkvb's ``attn.q_bias`` / ``attn.v_bias``."""
    out = dict(sd)
    for key in sd:
        m = re.fullmatch(r'(blocks\.\d+\.attn\.)(q_proj\.weight|q_bias)', key)
        if m is None:
            continue
        h = m.group(1)
        if m.group(2) == 'q_proj.weight':
            weights = [out.pop(f'{h}{n}_proj.weight') for n in 'qkv']
            out[h + 'qkv.weight'] = torch.cat(weights)
            biases = [out.pop(f'{h}{n}_proj.bias', None) for n in 'qkv']
            log.converted[h + 'qkv.weight'] = f'{h}q_proj, k_proj, v_proj concatenated'
        else:
            biases = [out.pop(f'{h}{n}_bias', None) for n in 'qkv']
        if any(b is not None for b in biases):
            ref = next(b for b in biases if b is not None)
            out[h + 'qkv.bias'] = torch.cat([torch.zeros_like(ref) if b is None else b for b in biases])
            log.converted[h + 'qkv.bias'] = f'{h}q, k (zeros if absent), v biases concatenated'
    return out


def _split_packed_glu(sd: StateDict, log: ConversionLog) -> StateDict:
    """timm's packed GLU MLP (``GluMlp``, EVA-02-Ti/S: one ``mlp.fc1`` ``[2h, C]``, ``silu(first half) *
    second half``) -> RoPEViT's SwiGLU ``mlp.fc1_g`` (gate, the first half) and ``mlp.fc1_x``."""
    out = dict(sd)
    for key in sd:
        m = re.fullmatch(r'(blocks\.\d+\.mlp\.)fc1\.(weight|bias)', key)
        if m is None:
            continue
        gate, value = out.pop(key).chunk(2, dim=0)
        out[f'{m.group(1)}fc1_g.{m.group(2)}'], out[f'{m.group(1)}fc1_x.{m.group(2)}'] = gate, value
        log.converted[f'{m.group(1)}fc1_g.{m.group(2)}'] = 'packed GLU fc1 split: first half the gate (fc1_g), second fc1_x'
    return out


def _refuse_swin(sd: StateDict) -> None:
    swin = [k for k in sd if _SWIN_KEY.match(k) or k.startswith('patch_embed.projection.')]
    if swin:
        raise CheckpointMismatchError(
            f'this is a Swin checkpoint (keys like {sorted(swin)[:4]}), not a ViT one: nothing in it fits '
            f'RoPEViT (expected keys like patch_embed.proj.weight, blocks.0.attn.qkv.weight, cls_token). '
            f'Use type="RoPESwin" for it, or a RoPE-ViT / DeiT-III checkpoint for RoPEViT')


def convert_vit_state_dict(state_dict: dict, model: Optional[nn.Module] = None, *,
                           num_heads: Optional[int] = None,
                           dropped: Optional[dict[str, str]] = None,
                           log: Optional[ConversionLog] = None,
                           checkpoint_rope: CheckpointRope = 'auto',
                           axial_theta: Optional[float] = None) -> StateDict:
    """Convert a RoPE-ViT checkpoint to :class:`RoPEViT` keys (pure function).

    Args:
        state_dict: a checkpoint or its state dict (``model`` / ``state_dict`` / ``module``
            wrappers, ``module.`` and ``backbone.`` prefixes are removed).
        model: the target ``RoPEViT``. When given, every tensor is checked against its
            shape; ``pos_embed`` is bicubic-resized to the model's pretrain grid if needed;
            the class token / final norm are dropped (and reported) when the model has none;
            the RoPE variant is fitted as the module docstring says.
        num_heads: heads, to unflatten the original ``freqs`` when no ``model`` is given
            (default: ``embed_dims // 64``, the head dim of every published RoPE-ViT).
        dropped: filled with ``key -> reason`` for everything left out on purpose.
        log: filled with everything else the conversion did (converted keys, hints,
            assumptions), for :func:`ropevit.checkpoint.common.load_state_dict_checked`.
        checkpoint_rope: what the checkpoint was trained with when the keys cannot tell:
            ``'auto'`` (learned frequencies: mixed; none: axial), ``'axial'`` or ``'none'``
            (a plain ViT without RoPE).
        axial_theta: theta of an axial checkpoint (default 100; an axial model uses its
            own ``rope_theta``, and a different value here is an error).

    Returns:
        The converted state dict (a new dict; input tensors are not modified).

    Raises:
        CheckpointMismatchError: a shape does not fit (names key and both shapes), the
            checkpoint is a Swin one, or it has RoPE and the model ``rope='none'``.
        ValueError: ``checkpoint_rope`` is not allowed or contradicts the keys.
    """
    check_checkpoint_rope(checkpoint_rope)
    log = conversion_log(log, dropped)
    sd = unwrap_state_dict(state_dict)
    sd = strip_prefix(sd, 'module.')
    if any(k.startswith('backbone.') for k in sd):
        for k in sd:
            if not k.startswith('backbone.'):
                log.dropped.setdefault(k.split('.')[0] + '.*', 'not part of the backbone')
        sd = strip_prefix(sd, 'backbone.')
    _refuse_swin(sd)
    layout = detect_vit_layout(sd)
    sd = _merge_split_qkv(sd, log)
    if layout == 'eva02':                                   # EVA-02 MLPs are always gated (SwiGLU)
        sd = _split_packed_glu(sd, log)
    if layout == 'eva02' and 'pos_embed' in sd and 'cls_token' in sd:
        pe = sd['pos_embed']
        n = pe.shape[1]
        if math.isqrt(n - 1) ** 2 == n - 1:                                   # [1, 1 + S*S, C]: a class slot
            sd = dict(sd, cls_token=sd['cls_token'] + pe[:, :1], pos_embed=pe[:, 1:])
            log.converted['cls_token'] = "cls_token + pos_embed[:, 0] (EVA-02's class-token position folded in)"
    own = model.state_dict() if model is not None else None
    if num_heads is None and model is not None:
        num_heads = model.num_heads

    out: StateDict = {}
    for key, value in sd.items():
        if key.startswith(_HEAD) or key in _HEAD_KEYS:
            log.dropped[key] = 'classification head'
            continue
        if key in ('freqs_t_x', 'freqs_t_y', 'freqs_cis') or (key.startswith('rope.') and key != 'rope.freqs'):
            log.dropped[key] = 'recomputed from the grid (not a weight)'
            continue
        if key == 'freqs' and layout == 'naver':
            two, depth, flat = value.shape                                  # [2, depth, nh * hd / 2]
            heads = num_heads or max(1, (2 * flat) // 64)
            if flat % heads:
                raise CheckpointMismatchError(f'freqs {tuple(value.shape)}: last dim {flat} is not divisible by '
                                              f'num_heads={heads}')
            key, value = 'rope.freqs', value.reshape(two, depth, heads, flat // heads)  # [2, depth, nh, hd/2]
        if layout in ('dinov3', 'eva02') and re.fullmatch(r'blocks\.\d+\.attn\.qkv\.(weight|bias)', key):
            if num_heads is None:
                raise ValueError(f'a {layout} checkpoint needs num_heads (or the model) to reorder its RoPE pairs')
            value = _permute_qk_rows(value, num_heads, layout)
            log.converted[key] = (f'q/k channels reordered from timm {layout} RoPE pairs '
                                  f'({"rotate-half, y first" if layout == "dinov3" else "y pairs first"}) to '
                                  f'RoPEViT\'s (interleaved, x first)')
        out[key] = value

    if own is None:
        return out

    # ---- fit to the model
    if layout == 'dinov3' and getattr(model, 'rope_coords', 'normalized') != 'normalized':
        log.warnings.append(f"a DINOv3 checkpoint (reg_token, rotate-half RoPE) was trained with normalised "
                            f"coordinates, but the model has rope_coords={model.rope_coords!r}: it computes "
                            f"another function; build it with rope_coords='normalized' (and rope='axial', "
                            f"rope_theta=100)")
    _fit_rope(out, model, log, checkpoint_rope=checkpoint_rope, axial_theta=axial_theta)
    if 'pos_embed' in out and 'pos_embed' not in own:
        log.hints['pos_embed'] = ('the checkpoint has an absolute position embedding but the model has '
                                  'use_ape=False: build it with use_ape=True to keep it, or set '
                                  'allow_unexpected=["pos_embed"] to drop it (the model then loses the '
                                  'positions the checkpoint was trained with)')
    if 'pos_embed' in own and 'pos_embed' not in out:
        log.hints['pos_embed'] = ('the checkpoint has no absolute position embedding: build the model with '
                                  'use_ape=False, or set allow_missing=["pos_embed"] to learn one from init')
    if 'cls_token' in out and 'cls_token' not in own:
        log.dropped['cls_token'] = 'model has with_cls_token=False'
        del out['cls_token']
    for key in [k for k in out if k.startswith('norm.') and k not in own]:
        log.dropped[key] = 'model has final_norm=False'
        del out[key]
    if 'pos_embed' in out and 'pos_embed' in own and out['pos_embed'].shape != own['pos_embed'].shape:
        pe = out['pos_embed']
        n_src, n_dst = pe.shape[1], own['pos_embed'].shape[1]
        s_src, s_dst = math.isqrt(n_src), math.isqrt(n_dst)
        if s_src * s_src == n_src and s_dst * s_dst == n_dst and pe.shape[2] == own['pos_embed'].shape[2]:
            from ropevit.layers.pos_embed import resample_pos_embed
            out['pos_embed'] = resample_pos_embed(pe, (s_src, s_src), (s_dst, s_dst))
    _fit_patch_kernel(out, own, log)
    bad = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in out.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointMismatchError(f'checkpoint does not fit {type(model).__name__}: ' + '; '.join(bad))
    return out


def _fit_patch_kernel(out: StateDict, own: StateDict, log: ConversionLog) -> None:
    """A patch kernel of another patch size (EVA-02's 14 into a ViTDet-style 16) is PI-resized
    (:func:`~ropevit.layers.patch_embed.resample_patch_kernel`; exact when the patch grows), in place."""
    key = 'patch_embed.proj.weight'
    if key not in out or key not in own:
        return
    src, dst = out[key].shape, own[key].shape
    if src != dst and src[:2] == dst[:2]:
        from ropevit.layers.patch_embed import resample_patch_kernel
        out[key] = resample_patch_kernel(out[key], tuple(dst[2:]))
        log.converted[key] = (f'patch kernel {src[2]}x{src[3]} resized to the model\'s {dst[2]}x{dst[3]} '
                              f'(pseudo-inverse of the bicubic patch resize: a patch and its upsampling embed alike)')


def _fit_rope(out: StateDict, model: nn.Module, log: ConversionLog, *, checkpoint_rope: str,
              axial_theta: Optional[float]) -> None:
    """The RoPE part of fitting (in place on ``out``): see the module docstring."""
    model_rope = getattr(model, 'rope_type', 'none')
    has_freqs = 'rope.freqs' in out
    if has_freqs and checkpoint_rope != 'auto':
        raise ValueError(f'checkpoint_rope={checkpoint_rope!r}, but the checkpoint has learned RoPE-Mixed '
                         f'frequencies (rope.freqs {tuple(out["rope.freqs"].shape)}); allowed here: "auto"')
    if model_rope == 'axial' and axial_theta is not None and not same_theta(axial_theta, model.rope_theta):
        raise ValueError(f'axial_rope_theta={axial_theta} differs from the axial model\'s rope_theta='
                         f'{model.rope_theta}; set one of them (an axial model uses its own rope_theta)')
    if has_freqs:                                                           # RoPE-Mixed checkpoint
        if model_rope == 'none':
            raise CheckpointMismatchError(
                f'checkpoint has RoPE-Mixed frequencies (rope.freqs {tuple(out["rope.freqs"].shape)}) but the '
                f'model has rope="none"; build it with rope="mixed"')
        if model_rope == 'axial':                                           # kept: unexpected unless allowed
            log.hints['rope.freqs'] = mixed_into_axial_hint('rope.freqs')
        return
    # No frequencies: RoPE-Axial (with or without APE) or, with pos_embed, possibly a plain ViT.
    theta = model.rope_theta if model_rope == 'axial' else (axial_theta or DEFAULT_AXIAL_THETA)
    kind = frequencyless_kind(checkpoint_rope, has_positions='pos_embed' in out, model_rope=model_rope, theta=theta,
                              family=VIT, log=log)
    if kind == 'axial' and model_rope == 'mixed':
        theta = DEFAULT_AXIAL_THETA if axial_theta is None else float(axial_theta)
        rope = model.rope
        out['rope.freqs'] = axial_as_mixed(rope.head_dim, theta, (rope.depth, rope.num_heads)).to(
            model.rope.freqs.dtype)                                         # [2, depth, nh, hd/2]
        log.converted['rope.freqs'] = f'axial frequencies converted to mixed (exact), theta={theta:g}'
    elif kind == 'none' and model_rope != 'none':
        if model_rope == 'mixed':
            log.new_at_init['rope.freqs'] = ('the checkpoint has no RoPE (checkpoint_rope="none"); the '
                                             'RoPE-Mixed frequencies start at their init')
        warn_plain_into_rope(model_rope, family=VIT, log=log)


def load_vit_checkpoint(model: nn.Module, checkpoint: dict, *, source: str = 'checkpoint', **options):
    """Convert ``checkpoint`` and load it into ``model`` with a report (see
    :func:`ropevit.checkpoint.common.load_state_dict_checked`; ``options``: its
    ``allow_missing``, ``allow_unexpected``, ``strict``, ``logger`` and the converter's
    ``checkpoint_rope``, ``axial_theta``)."""
    from .common import load_state_dict_checked
    conv = {k: options.pop(k) for k in ('checkpoint_rope', 'axial_theta') if k in options}
    log = ConversionLog()
    state_dict = convert_vit_state_dict(checkpoint, model, log=log, **conv)
    return load_state_dict_checked(model, state_dict, source=source, log=log, expected_new=EXPECTED_NEW_KEYS,
                                   **options)


__all__ = ['DEFAULT_AXIAL_THETA', 'EXPECTED_NEW_KEYS', 'convert_vit_state_dict', 'detect_vit_layout',
           'load_vit_checkpoint']
