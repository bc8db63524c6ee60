"""2D rotary position embedding (RoPE) for vision, as pure functions.

Vocabulary: ``B`` batch, ``nh`` heads, ``N`` tokens, ``hd`` head dim, ``P = hd // 2``
rotation pairs. Pair ``j`` is the element pair ``(2j, 2j + 1)`` of a head's q/k
(interleaved layout, as in naver-ai/rope-vit and timm's port of it).

Every variant is written as "frequencies times coordinates":

    angle[n, j] = x_n * fx[j] + y_n * fy[j]

* RoPE-Axial: ``fx = [m, 0]``, ``fy = [0, m]`` with ``m_k = 1 / theta ** (4k / hd)``,
  i.e. the first half of the pairs rotate with x, the second half with y.
* RoPE-Mixed: ``fx, fy`` are learnable, initialised with the magnitudes ``m`` along two
  orthogonal directions at a random angle per head (and per block).

Angles, cos and sin are always computed in float32 (also under autocast); the
rotated q/k come back in their input dtype.

Checked against timm 1.0.31 (``timm/layers/pos_embed_sincos.py``), which the published
RoPE-ViT weights were ported to: axial bands ``1 / theta ** (k / (hd / 4))`` for
``k < hd / 4`` (``freq_bands(step=1)``, equal to ``arange(0, hd, 4) / hd``), coordinates
on the integer grid with ``grid_indexing='xy'`` (channel 0 = column x, channel 1 = row
y, tokens row-major), no ``ref_feat_shape`` rescale and no grid offset for the naver
models, so at any input size the coordinates are plain patch indices; x-pairs first,
then y-pairs; interleaved ``(2j, 2j+1)`` rotation. Mixed: ``init_random_2d_freqs``
layout ``[2, depth, nh, hd // 2]`` and angle ``x * fx + y * fy``.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from .tracing import is_compiling, is_tracing  # noqa: F401  (is_compiling: re-exported)

RopeType = Literal['axial', 'mixed', 'none']
ROPE_TYPES: tuple[str, ...] = ('axial', 'mixed', 'none')
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}  # rotation dtype per real one


def check_rope_args(rope: str, head_dim: int) -> None:
    """Raise ``ValueError`` for an unknown variant or a head dim RoPE cannot split."""
    if rope not in ROPE_TYPES:
        raise ValueError(f'rope={rope!r} is not supported; choose one of {ROPE_TYPES}')
    if rope != 'none' and head_dim % 4 != 0:
        raise ValueError(
            f'2D RoPE needs head_dim divisible by 4 (x and y pairs), got head_dim={head_dim}; '
            f'change embed_dims or num_heads, or use rope="none"')


def grid_coords(height: int, width: int, *, device: Optional[torch.device] = None) -> torch.Tensor:
    """Token coordinates of an ``height x width`` grid in row-major token order.

    Returns:
        ``[H*W, 2]`` float32 tensor of ``(x, y)`` = (column, row).
    """
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :].expand(height, width)   # [H, W]
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None].expand(height, width)  # [H, W]
    # Stacked (a fresh contiguous tensor), then viewed: flattening the expanded grids would
    # make torch.export ask whether a side is 1.
    return torch.stack([xs, ys], -1).view(-1, 2)                                                  # [H*W, 2]


def rope_magnitudes(head_dim: int, theta: float, *, device: Optional[torch.device] = None) -> torch.Tensor:
    """``1 / theta ** (arange(0, hd, 4)[: hd // 4] / hd)`` as float32, shape ``[hd // 4]``."""
    exponent = torch.arange(0, head_dim, 4, device=device, dtype=torch.float32)[: head_dim // 4] / head_dim
    return 1.0 / theta ** exponent


def axial_frequencies(head_dim: int, theta: float = 100.0, *,
                      device: Optional[torch.device] = None) -> torch.Tensor:
    """Fixed axial frequencies.

    Returns:
        ``[2, hd // 2]`` float32: row 0 multiplies x, row 1 multiplies y. Pairs
        ``[0, hd/4)`` rotate with x only, pairs ``[hd/4, hd/2)`` with y only.
    """
    mag = rope_magnitudes(head_dim, theta, device=device)  # [hd//4]
    zero = torch.zeros_like(mag)
    fx = torch.cat([mag, zero])                             # [hd//2]
    fy = torch.cat([zero, mag])                             # [hd//2]
    return torch.stack([fx, fy])                            # [2, hd//2]


def init_mixed_frequencies(head_dim: int, num_heads: int, depth: Optional[int] = None,
                           theta: float = 10.0, *, generator: Optional[torch.Generator] = None,
                           device: Optional[torch.device] = None) -> torch.Tensor:
    """Initial RoPE-Mixed frequencies.

    Per head (and block) a random angle ``a``: the first ``hd/4`` pairs point along
    ``(cos a, sin a)``, the rest along the orthogonal ``(cos(a + pi/2), sin(a + pi/2))``,
    both with the axial magnitudes.

    Returns:
        ``[2, depth, nh, hd // 2]`` (or ``[2, nh, hd // 2]`` when ``depth`` is None).
    """
    lead = (num_heads,) if depth is None else (depth, num_heads)
    mag = rope_magnitudes(head_dim, theta, device=device)                            # [hd//4]
    angle = torch.rand(*lead, 1, generator=generator, device=device) * 2 * math.pi   # [..., nh, 1]
    fx = torch.cat([mag * torch.cos(angle), mag * torch.cos(angle + math.pi / 2)], -1)  # [..., nh, hd//2]
    fy = torch.cat([mag * torch.sin(angle), mag * torch.sin(angle + math.pi / 2)], -1)  # [..., nh, hd//2]
    return torch.stack([fx, fy])                                                      # [2, ..., nh, hd//2]


def rope_angles(freqs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Rotation angle of every pair at every token, in float32.

    Args:
        freqs: ``[2, ..., P]`` (x and y frequency components; ``...`` e.g. ``nh``).
        coords: ``[N, 2]`` token coordinates ``(x, y)``.

    Returns:
        ``[..., N, P]`` angles.
    """
    freqs = freqs.float()
    coords = coords.float()
    # Elementwise outer products: a matmul would be downcast under autocast.
    fx = freqs[0].unsqueeze(-2)                    # [..., 1, P]
    fy = freqs[1].unsqueeze(-2)                    # [..., 1, P]
    x = coords[:, 0, None]                         # [N, 1]
    y = coords[:, 1, None]                         # [N, 1]
    return x * fx + y * fy                         # [..., N, P]


def rope_cos_sin(freqs: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` tables ``[..., N, P]`` in float32 (autocast disabled)."""
    with torch.autocast(device_type=coords.device.type, enabled=False):
        angles = rope_angles(freqs, coords)
        return angles.cos(), angles.sin()


def rope_rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``cos + i sin`` as one complex tensor, the form :func:`apply_rope` multiplies by.

    Built once per table and handed to :func:`apply_rope` as ``rot``, it saves one kernel
    per attention call (the tables are shared by blocks and reused across forwards).
    """
    return torch.complex(cos.float(), sin.float())


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               rot: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rotate consecutive pairs ``(2j, 2j+1)`` of ``x`` by the given angles (out of place).

    ``out[2j] = x[2j] cos_j - x[2j+1] sin_j``, ``out[2j+1] = x[2j] sin_j + x[2j+1] cos_j``.
    As in timm's ``apply_rot_embed``, the products use normal dtype promotion (a bf16
    ``x`` times float32 tables is computed in float32) and only the finished rotation is
    cast back, so the result is in ``x.dtype``. Never in place: ``x`` may be a view of
    q/k that autograd still needs.

    In eager mode the rotation is one complex multiplication ``(x0 + i x1)(cos + i sin)``
    (the same two products and one add per output, so the same numbers), a single pass
    over ``x`` instead of the ~7 of the unbind/multiply/stack form: 5-8x faster on CPU, and
    fewer kernel launches on GPU. Under ``torch.compile`` the real form is traced instead,
    which Inductor fuses (it has no complex code generation); under ``torch.export`` and the
    ONNX exporters too (ONNX has no complex type).

    Args:
        x: ``[..., N, hd]`` queries or keys (e.g. ``[B, nh, N, hd]``) of the ``N`` tokens
            the tables have rows for (patch tokens, or prefix + patch tokens when the
            tables start with identity rows).
        cos, sin: ``[N, P]`` or ``[nh, N, P]`` (broadcast over batch), ``P = hd // 2``.
        rot: optional ``rope_rotation(cos, sin)``, used in eager mode when its precision
            is the one the rotation is computed in (complex64 unless ``x`` is float64).

    Returns:
        Tensor like ``x``, in ``x.dtype``.
    """
    if is_tracing():
        return _apply_rope_real(x, cos, sin)
    wdt = torch.promote_types(torch.promote_types(x.dtype, cos.dtype), torch.float32)
    pairs = x.to(wdt).unflatten(-1, (-1, 2))                  # [..., N, P, 2]
    if pairs.stride(-1) != 1 or pairs.storage_offset() % 2 or any(st % 2 for st in pairs.stride()[:-1]):
        pairs = pairs.contiguous()                            # view_as_complex needs even strides
    if rot is None or rot.dtype != _COMPLEX[wdt]:
        rot = torch.complex(cos.to(wdt), sin.to(wdt))         # [..., N, P]
    out = torch.view_as_real(torch.view_as_complex(pairs) * rot)  # [..., N, P, 2]
    return out.flatten(-2).to(x.dtype)                        # [..., N, hd]


def _apply_rope_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` in real arithmetic (the form ``torch.compile`` fuses)."""
    x_pairs = x.unflatten(-1, (-1, 2))                        # [..., N, P, 2]
    x0, x1 = x_pairs.unbind(-1)                               # [..., N, P] each
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1)  # [..., N, P, 2]
    return out.flatten(-2).to(x.dtype)                        # [..., N, hd]
