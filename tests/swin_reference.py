"""Float64 references for the Swin tests, written from the papers' formulas; imports nothing
from ``ropevit``.

* :func:`rotate_pairs` / :func:`window_attention`: (shifted) window attention with 2D RoPE
  (Heo et al., "Rotary Position Embedding for Vision Transformer", ECCV 2024) as explicit
  2x2 rotation matrices, Swin's cyclic shift with ``roll``, the shift-region mask, zero
  padding to window multiples, and Swin's relative position bias (Liu et al., 2021).
* :func:`original_state_dict`: a random checkpoint in the layout of the original RoPE-Swin
  (naver-ai/rope-vit ``models/swin_transformer_rope.py``, built on Microsoft's Swin):
  ``patch_embed.{proj, norm}``, ``layers.i.blocks.j.{norm1, attn.qkv, attn.proj,
  attn.rope_freqs, attn.rope_t_x, attn.rope_t_y, attn.relative_position_bias_table,
  attn.relative_position_index, attn_mask, norm2, mlp.fc1, mlp.fc2}``,
  ``layers.i.downsample.{norm, reduction}``, ``norm``, ``head``, with the shapes and
  buffers the original builds for a given ``img_size``.
* :func:`original_forward`: the original model's forward on such a state dict, as the
  original code computes it when built with ``img_size`` equal to the input size.

Conventions (from the papers / the original code, not from ropevit):

* RoPE pair ``p`` of a head is the element pair ``(2p, 2p + 1)`` (interleaved, the original's
  ``view_as_complex(x.reshape(..., -1, 2))``); it is rotated by the angle
  ``fx[p] * x + fy[p] * y`` with ``x`` the column and ``y`` the row of the token in its window.
* RoPE-Axial (``rope_mixed=False`` in the original): ``fx = [m, m cos(pi/2)]``,
  ``fy = [0, m]``, ``m_k = theta ** (-4k / hd)`` for ``k < hd / 4``.
* Swin's window rule: a stage whose grid has ``min(H, W) <= window_size`` uses window
  ``min(H, W)`` and no shift.
* Microsoft's patch merging concatenates ``[x(0::2, 0::2), x(1::2, 0::2), x(0::2, 1::2),
  x(1::2, 1::2)]`` (row offset first: ``x1`` is one row down), then norm, then reduction.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F

Rope = Literal['mixed', 'axial', 'none']


# ----------------------------------------------------------------------------- RoPE
def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``[..., 2, 2]`` matrices ``[[cos a, -sin a], [sin a, cos a]]`` for angles ``[...]``."""
    c, s = angles.cos(), angles.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def rotate_pairs(v: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, xs: torch.Tensor,
                 ys: torch.Tensor) -> torch.Tensor:
    """Rotate pair ``p = (v[2p], v[2p+1])`` of token ``n`` by ``fx[p] * xs[n] + fy[p] * ys[n]``.

    ``v [..., N, hd]``, ``fx, fy [P]`` (``P = hd // 2``), ``xs, ys [N]`` -> ``[..., N, hd]``.
    """
    angles = xs[:, None] * fx[None, :] + ys[:, None] * fy[None, :]          # [N, P]
    rot = rotation_matrices(angles)                                          # [N, P, 2, 2]
    pairs = v.reshape(*v.shape[:-1], -1, 2)                                  # [..., N, P, 2]
    return torch.einsum('npij,...npj->...npi', rot, pairs).reshape(v.shape)


def axial_freqs_original(head_dim: int, theta: float) -> torch.Tensor:
    """``[2, hd // 2]`` axial frequencies as the original builds them (float32, angle 0)."""
    mag = 1 / theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim)
    zero = torch.zeros(1)
    fx = torch.cat([mag * torch.cos(zero), mag * torch.cos(zero + math.pi / 2)])
    fy = torch.cat([mag * torch.sin(zero), mag * torch.sin(zero + math.pi / 2)])
    return torch.stack([fx, fy])


def mixed_freqs_random(head_dim: int, num_heads: int, theta: float, generator: torch.Generator) -> torch.Tensor:
    """``[2, nh, hd // 2]`` RoPE-Mixed frequencies: per head the axial magnitudes along two
    orthogonal directions at a random angle, plus noise so that training is imitated."""
    mag = 1 / theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim)
    a = torch.rand(num_heads, 1, generator=generator) * 2 * math.pi
    fx = torch.cat([mag * torch.cos(a), mag * torch.cos(a + math.pi / 2)], -1)
    fy = torch.cat([mag * torch.sin(a), mag * torch.sin(a + math.pi / 2)], -1)
    freqs = torch.stack([fx, fy])
    return freqs + 0.1 * torch.randn(freqs.shape, generator=generator)


# ----------------------------------------------------------------------------- window attention
def region_labels(hp: int, wp: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Swin's shift regions on the padded grid, in the rolled frame: ``[Hp, Wp]`` labels.

    Rows ``[0, Hp - ws)``, ``[Hp - ws, Hp - s)``, ``[Hp - s, Hp)`` (and the same for columns)
    are regions; two tokens of a rolled window may attend each other only in the same one.
    """
    labels = torch.zeros(hp, wp, dtype=torch.long)
    if shift_size == 0:
        return labels
    ws, s = window_size, shift_size
    row_bounds = [(0, hp - ws), (hp - ws, hp - s), (hp - s, hp)]
    col_bounds = [(0, wp - ws), (wp - ws, wp - s), (wp - s, wp)]
    for ri, (r0, r1) in enumerate(row_bounds):
        for ci, (c0, c1) in enumerate(col_bounds):
            labels[r0:r1, c0:c1] = 3 * ri + ci
    return labels


def swin_relative_position_index(window_size: int) -> torch.Tensor:
    """Swin's ``[N, N]`` index: ``(dy + ws - 1) * (2 ws - 1) + (dx + ws - 1)``, ``(dy, dx)``
    = row and column of query minus those of key."""
    ws = window_size
    rows, cols = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
    rows, cols = rows.flatten(), cols.flatten()
    dy = rows[:, None] - rows[None, :] + ws - 1
    dx = cols[:, None] - cols[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def swin_attn_mask(hw: tuple[int, int], window_size: int, shift_size: int) -> torch.Tensor:
    """Microsoft's ``attn_mask`` buffer: ``[nW, N, N]``, ``-100`` across regions, else 0."""
    h, w = hw
    ws = window_size
    labels = region_labels(h, w, ws, shift_size)
    win = labels.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)   # [nW, N]
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros(diff.shape).masked_fill(diff != 0, -100.0)


def window_attention(x: torch.Tensor, hw: tuple[int, int], *, qkv_w: torch.Tensor, qkv_b: Optional[torch.Tensor],
                     proj_w: torch.Tensor, proj_b: torch.Tensor, num_heads: int, window_size: int,
                     shift_size: int, freqs: Optional[torch.Tensor] = None,
                     coords: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                     bias_table: Optional[torch.Tensor] = None, table_window: Optional[int] = None,
                     bias_index: Optional[torch.Tensor] = None, attn_mask: Optional[torch.Tensor] = None,
                     mask_padding: bool = True) -> torch.Tensor:
    """(Shifted) window multi-head self-attention with RoPE, in the input's dtype.

    Args:
        x: ``[B, H*W, C]`` (the block's normed input).
        hw: ``(H, W)``.
        qkv_w, qkv_b, proj_w, proj_b: the linear layers (``qkv`` output ordered
            ``[3, nh, hd]``).
        num_heads, window_size, shift_size: the window this block uses on this grid.
        freqs: ``[2, nh, hd // 2]`` RoPE frequencies (x row, y row) or None (no RoPE).
        coords: window-local ``(xs, ys)`` ``[N]`` each (default: column, row of the
            row-major ``ws x ws`` window).
        bias_table: ``[(2T - 1)^2, nh]`` relative position bias, indexed by the actual
            offsets of a ``T = table_window`` (default ``window_size``) table, or by
            ``bias_index`` ``[N, N]`` when given.
        attn_mask: ``[nW, N, N]`` additive mask used instead of the region / padding one
            (the original's buffer).
        mask_padding: exclude zero-padded tokens as keys (else they take part, as in
            mmdet's Swin).

    Returns:
        ``[B, H*W, C]``.
    """
    b, _, c = x.shape
    h, w = hw
    ws, s = window_size, shift_size
    nh, hd = num_heads, c // num_heads
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    grid = x.new_zeros(b, hp, wp, c)
    grid[:, :h, :w] = x.view(b, h, w, c)
    valid = torch.zeros(hp, wp, dtype=torch.bool)
    valid[:h, :w] = True
    grid = torch.roll(grid, (-s, -s), (1, 2))                                # rolled frame
    valid = torch.roll(valid, (-s, -s), (0, 1))
    labels = region_labels(hp, wp, ws, s)

    def windows(t: torch.Tensor) -> torch.Tensor:                            # [..., Hp, Wp, D] -> [..., nW, N, D]
        lead = t.shape[:-3]
        t = t.reshape(*lead, hp // ws, ws, wp // ws, ws, t.shape[-1])
        t = t.movedim(-4, -3)                                                # [..., nWh, nWw, ws, ws, D]
        return t.reshape(*lead, -1, ws * ws, t.shape[-1])

    xw = windows(grid)                                                       # [B, nW, N, C]
    qkv = xw @ qkv_w.t() + (qkv_b if qkv_b is not None else 0)
    qkv = qkv.reshape(b, -1, ws * ws, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)   # [3, B, nW, nh, N, hd]
    q, k, v = qkv[0], qkv[1], qkv[2]
    if freqs is not None:
        if coords is None:
            rows, cols = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
            coords = (cols.flatten(), rows.flatten())
        xs, ys = (t.to(x.dtype) for t in coords)
        q = torch.stack([rotate_pairs(q[:, :, i], freqs[0, i].to(x.dtype), freqs[1, i].to(x.dtype), xs, ys)
                         for i in range(nh)], 2)
        k = torch.stack([rotate_pairs(k[:, :, i], freqs[0, i].to(x.dtype), freqs[1, i].to(x.dtype), xs, ys)
                         for i in range(nh)], 2)
    scores = q @ k.transpose(-1, -2) * hd ** -0.5                            # [B, nW, nh, N, N]
    if bias_table is not None:
        if bias_index is None:
            t = window_size if table_window is None else table_window
            rows, cols = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
            rows, cols = rows.flatten(), cols.flatten()
            dy, dx = rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]
            bias_index = (dy + t - 1) * (2 * t - 1) + (dx + t - 1)
        scores = scores + bias_table.to(x.dtype)[bias_index].permute(2, 0, 1)  # + [nh, N, N]
    if attn_mask is not None:
        scores = scores + attn_mask.to(x.dtype)[None, :, None]
        attn = scores.softmax(-1)
    else:
        lab = windows(labels[None, :, :, None])[0, ..., 0]                    # [nW, N]
        key_ok = windows(valid[None, :, :, None])[0, ..., 0]                  # [nW, N]
        allowed = lab[:, :, None] == lab[:, None, :]                          # [nW, N, N]
        if mask_padding:
            allowed = allowed & key_ok[:, None, :]
        scores = scores.masked_fill(~allowed[None, :, None], float('-inf'))
        attn = scores.softmax(-1).nan_to_num(0.0)                             # all-masked rows: padding queries
    out = attn @ v                                                            # [B, nW, nh, N, hd]
    out = out.transpose(2, 3).reshape(b, -1, ws * ws, c) @ proj_w.t() + proj_b  # [B, nW, N, C]
    out = out.reshape(b, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
    out = torch.roll(out, (s, s), (1, 2))
    return out[:, :h, :w].reshape(b, h * w, c)


def original_window(hw: tuple[int, int], window_size: int) -> tuple[int, int]:
    """Swin's rule: ``(window, shift of the odd blocks)`` for a stage grid."""
    if min(hw) <= window_size:
        return min(hw), 0
    return window_size, window_size // 2


# ----------------------------------------------------------------------------- the original RoPE-Swin
def _stage_grids(img_size: tuple[int, int], patch_size: int, num_stages: int) -> list[tuple[int, int]]:
    h, w = img_size[0] // patch_size, img_size[1] // patch_size
    return [(h // 2 ** i, w // 2 ** i) for i in range(num_stages)]


def original_state_dict(*, embed_dims: int, depths: Sequence[int], num_heads: Sequence[int], window_size: int,
                        img_size: tuple[int, int], rope: Rope, use_rpb: bool, theta: Optional[float] = None,
                        patch_size: int = 4, num_classes: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random float32 state dict of the original RoPE-Swin / Microsoft Swin for ``img_size``.

    ``rope='none'`` is Microsoft's plain Swin (no ``rope_*`` entries; its bias table is
    ``use_rpb``). Weights are drawn so that attention is far from uniform (the window
    and shift then matter).
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def norm(prefix: str, c: int) -> dict[str, torch.Tensor]:
        return {prefix + '.weight': 1 + rnd(c, std=0.1), prefix + '.bias': rnd(c, std=0.1)}

    theta = theta if theta is not None else {'mixed': 10.0, 'axial': 50.0, 'none': 0.0}[rope]
    sd: dict[str, torch.Tensor] = {'patch_embed.proj.weight': rnd(embed_dims, 3, patch_size, patch_size, std=0.2),
                                   'patch_embed.proj.bias': rnd(embed_dims, std=0.1)}
    sd.update(norm('patch_embed.norm', embed_dims))
    grids = _stage_grids(img_size, patch_size, len(depths))
    for i, (depth, nh) in enumerate(zip(depths, num_heads)):
        c = embed_dims * 2 ** i
        hd = c // nh
        ws, shift = original_window(grids[i], window_size)
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            sd.update(norm(p + 'norm1', c))
            sd[p + 'attn.qkv.weight'] = rnd(3 * c, c, std=1.5 / math.sqrt(c))
            sd[p + 'attn.qkv.bias'] = rnd(3 * c, std=0.1)
            sd[p + 'attn.proj.weight'] = rnd(c, c, std=0.5 / math.sqrt(c))
            sd[p + 'attn.proj.bias'] = rnd(c, std=0.05)
            if use_rpb:
                sd[p + 'attn.relative_position_bias_table'] = rnd((2 * ws - 1) ** 2, nh, std=0.5)
                sd[p + 'attn.relative_position_index'] = swin_relative_position_index(ws)
            if rope != 'none':
                t = torch.arange(ws * ws, dtype=torch.float32)
                sd[p + 'attn.rope_t_x'] = t % ws
                sd[p + 'attn.rope_t_y'] = torch.div(t, ws, rounding_mode='floor')
                sd[p + 'attn.rope_freqs'] = (mixed_freqs_random(hd, nh, theta, g) if rope == 'mixed'
                                             else axial_freqs_original(hd, theta)[:, None].repeat(1, nh, 1))
            if j % 2 == 1 and shift > 0:
                sd[p + 'attn_mask'] = swin_attn_mask(grids[i], ws, shift)
            sd.update(norm(p + 'norm2', c))
            sd[p + 'mlp.fc1.weight'] = rnd(4 * c, c, std=1 / math.sqrt(c))
            sd[p + 'mlp.fc1.bias'] = rnd(4 * c, std=0.1)
            sd[p + 'mlp.fc2.weight'] = rnd(c, 4 * c, std=0.5 / math.sqrt(4 * c))
            sd[p + 'mlp.fc2.bias'] = rnd(c, std=0.05)
        if i < len(depths) - 1:
            sd.update(norm(f'layers.{i}.downsample.norm', 4 * c))
            sd[f'layers.{i}.downsample.reduction.weight'] = rnd(2 * c, 4 * c, std=1 / math.sqrt(4 * c))
    c = embed_dims * 2 ** (len(depths) - 1)
    sd.update(norm('norm', c))
    sd['head.weight'] = rnd(num_classes, c, std=0.02)
    sd['head.bias'] = torch.zeros(num_classes)
    return sd


def original_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, *, depths: Sequence[int],
                     num_heads: Sequence[int], window_size: int, rope: Rope, patch_size: int = 4,
                     eps: float = 1e-5) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The original RoPE-Swin / Swin forward built with ``img_size = x.shape[-2:]``, in float64.

    Returns:
        ``(stage_maps, final)``: each stage's block output before its patch merging,
        ``[B, C_i, H_i, W_i]``, and the last stage after the classifier's ``norm``
        (``forward_features`` before pooling), ``[B, C_last, H_3, W_3]``.
    """
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    x = x.double()

    def ln(t: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(t, t.shape[-1:], sd[prefix + '.weight'], sd[prefix + '.bias'], eps)

    t = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=patch_size)
    b, c, h, w = t.shape
    t = ln(t.flatten(2).transpose(1, 2), 'patch_embed.norm')                  # [B, H*W, C]
    maps = []
    for i, (depth, nh) in enumerate(zip(depths, num_heads)):
        ws, shift = original_window((h, w), window_size)
        if h % ws or w % ws:
            raise ValueError(f'the original Swin cannot run stage {i}: grid {(h, w)} is not a multiple of '
                             f'its window {ws}')
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            s = shift if j % 2 == 1 else 0
            assert (p + 'attn_mask' in sd) == (s > 0), p
            coords = (sd[p + 'attn.rope_t_x'], sd[p + 'attn.rope_t_y']) if rope != 'none' else None
            if coords is not None:
                assert coords[0].numel() == ws * ws, (p, ws)
            a = window_attention(
                ln(t, p + 'norm1'), (h, w), qkv_w=sd[p + 'attn.qkv.weight'], qkv_b=sd[p + 'attn.qkv.bias'],
                proj_w=sd[p + 'attn.proj.weight'], proj_b=sd[p + 'attn.proj.bias'], num_heads=nh,
                window_size=ws, shift_size=s, freqs=sd.get(p + 'attn.rope_freqs') if rope != 'none' else None,
                coords=coords, bias_table=sd.get(p + 'attn.relative_position_bias_table'),
                bias_index=sd.get(p + 'attn.relative_position_index'),
                attn_mask=sd[p + 'attn_mask'] if s > 0 else torch.zeros(1, ws * ws, ws * ws))
            t = t + a
            u = F.gelu(ln(t, p + 'norm2') @ sd[p + 'mlp.fc1.weight'].t() + sd[p + 'mlp.fc1.bias'])
            t = t + u @ sd[p + 'mlp.fc2.weight'].t() + sd[p + 'mlp.fc2.bias']
        maps.append(t.transpose(1, 2).reshape(b, -1, h, w))
        if i < len(depths) - 1:
            g = t.view(b, h, w, -1)
            g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
            h, w = h // 2, w // 2
            t = ln(g.view(b, h * w, -1), f'layers.{i}.downsample.norm') @ sd[
                f'layers.{i}.downsample.reduction.weight'].t()
    final = ln(t, 'norm').transpose(1, 2).reshape(b, -1, h, w)
    return maps, final
