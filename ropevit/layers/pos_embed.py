"""Absolute position embedding of RoPE-ViT's APE variants, resized to the actual grid.

Eager code resizes with ``F.interpolate(mode='bicubic', antialias=True)`` (timm's
``resample_abs_pos_embed``). That op (``_upsample_bicubic2d_aa``) has no ONNX form, and
plain bicubic is a different filter (``a = -0.75``, no antialiasing), so under an exporter
the same resize is written as two matrix products, ``Wh @ grid @ Ww^T``, whose weights are
built from the input's grid inside the graph (:func:`aa_bicubic_weights`): the exported
model computes what eager computes, at any size (to float32 rounding, ~1e-7).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .tracing import contiguous, is_exporting

#: Keys' cubic-convolution coefficient of the antialiased bicubic filter (PIL's, and
#: PyTorch's ``antialias=True``); plain bicubic uses -0.75.
_AA_CUBIC_A = -0.5


def _cubic(x: torch.Tensor, a: float = _AA_CUBIC_A) -> torch.Tensor:
    """Keys' cubic kernel at ``|x|`` (zero for ``|x| >= 2``)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1                  # |x| < 1
    far = (((x - 5) * x + 8) * x - 4) * a                       # 1 <= |x| < 2
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def aa_bicubic_weights(out_size, in_size: int, *, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[out, in]`` float32 matrix of ``F.interpolate(mode='bicubic', antialias=True,
    align_corners=False)`` along one axis, from ``in_size`` samples to ``out_size``.

    Output sample ``i`` sits at ``center = scale * (i + 0.5)`` in input pixels
    (``scale = in / out``); when shrinking the kernel is stretched by ``scale`` (the
    antialiasing). Its taps are the input samples ``j`` in
    ``[trunc(center - support + 0.5), trunc(center + support + 0.5))`` clipped to the
    input (``support = 2 * max(scale, 1)``), weighted by the cubic at
    ``(j + 0.5 - center) / max(scale, 1)`` and normalised to sum 1 (PyTorch's
    ``UpSampleKernel.cpp``, PIL's ``ImagingResample``).

    ``out_size`` may be a symbolic or traced size: every step is a tensor op, with no
    Python branch on it.
    """
    i = torch.arange(out_size, device=device, dtype=torch.float32)         # [out]
    n_out = torch.ones_like(i).sum()                                         # [] = out, as a tensor (exact)
    scale = in_size / n_out                                                  # []
    stretch = scale.clamp(min=1.0)                                           # []
    support = 2.0 * stretch                                                  # []
    center = scale * (i + 0.5)                                               # [out]
    j = torch.arange(in_size, device=device, dtype=torch.float32)          # [in]
    lo = (center - support + 0.5).floor().clamp(min=0)[:, None]              # [out, 1]
    hi = (center + support + 0.5).floor()[:, None]                           # [out, 1]
    w = _cubic((j[None] - center[:, None] + 0.5) / stretch)                  # [out, in]
    w = torch.where((j[None] >= lo) & (j[None] < hi), w, torch.zeros_like(w))
    return w / w.sum(-1, keepdim=True)                                       # [out, in]


def resample_pos_embed(pos_embed: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic (antialiased, as timm's ``resample_abs_pos_embed``) resize of
    ``[1, Hs*Ws, C]`` to ``[1, Hd*Wd, C]``; unchanged when the sizes are equal.

    Under ``torch.export`` / ``torch.jit.trace`` (the ONNX exporters) the same resize is two
    matrix products (:func:`aa_bicubic_weights`), always applied: ``dst_hw`` is then the
    input's symbolic grid, and an equal size gives the identity matrices.
    """
    C = pos_embed.shape[-1]
    if is_exporting():
        (hs, ws), (hd, wd) = src_hw, dst_hw
        wh = aa_bicubic_weights(hd, hs, device=pos_embed.device)                     # [Hd, Hs]
        ww = aa_bicubic_weights(wd, ws, device=pos_embed.device)                     # [Wd, Ws]
        # Two 2-D matmuls (``torch.mm``: the batched form asks the tracer whether a side is 1).
        grid = pos_embed.float().reshape(hs, ws * C)                                 # [Hs, Ws*C]
        grid = torch.mm(wh, grid).view(hd, ws, C)                                    # [Hd, Ws, C]
        grid = contiguous(grid.transpose(0, 1)).view(ws, hd * C)                     # [Ws, Hd*C]
        grid = torch.mm(ww, grid).view(wd, hd, C)                                    # [Wd, Hd, C]
        grid = contiguous(grid.transpose(0, 1)).view(1, hd * wd, C)                  # [1, Hd*Wd, C]
        return grid.to(pos_embed.dtype)
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    grid = pos_embed.float().reshape(1, *src_hw, C).permute(0, 3, 1, 2)               # [1, C, Hs, Ws]
    grid = F.interpolate(grid, size=tuple(dst_hw), mode='bicubic', antialias=True)  # [1, C, Hd, Wd]
    return grid.permute(0, 2, 3, 1).reshape(1, -1, C).to(pos_embed.dtype)            # [1, Hd*Wd, C]
