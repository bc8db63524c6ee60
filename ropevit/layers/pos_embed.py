"""Absolute position embedding of RoPE-ViT's APE variants, resized to the actual grid."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed(pos_embed: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic (antialiased, as timm's ``resample_abs_pos_embed``) resize of
    ``[1, Hs*Ws, C]`` to ``[1, Hd*Wd, C]``; unchanged when the sizes are equal."""
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    C = pos_embed.shape[-1]
    grid = pos_embed.float().reshape(1, *src_hw, C).permute(0, 3, 1, 2)               # [1, C, Hs, Ws]
    grid = F.interpolate(grid, size=tuple(dst_hw), mode='bicubic', antialias=True)  # [1, C, Hd, Wd]
    return grid.permute(0, 2, 3, 1).reshape(1, -1, C).to(pos_embed.dtype)            # [1, Hd*Wd, C]
