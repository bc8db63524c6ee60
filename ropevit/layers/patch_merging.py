"""Swin's 2x2 patch merging (mmdet's key layout: ``downsample.{norm, reduction}``)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layer_types import NormLayer


class PatchMerging(nn.Module):
    """2x2 patch merging: ``[B, H*W, C]`` -> ``[B, ceil(H/2)*ceil(W/2), 2C]``.

    Odd sides are zero-padded at the bottom/right. The 4C vector of a 2x2 group is
    channel-major, ``index = c * 4 + 2 * dy + dx`` (mmdet's ``nn.Unfold`` order; Microsoft's
    Swin uses position-major ``[(0,0), (1,0), (0,1), (1,1)] x C``, see the converter).
    """

    def __init__(self, in_channels: int, out_channels: int, *,
                 norm_layer: Optional[NormLayer] = nn.LayerNorm) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm = norm_layer(4 * in_channels) if norm_layer is not None else None
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))                         # [B, H2*2, W2*2, C]
        h2, w2 = x.shape[1] // 2, x.shape[2] // 2
        x = x.view(b, h2, 2, w2, 2, c).permute(0, 1, 3, 5, 2, 4)          # [B, H2, W2, C, dy, dx]
        x = x.reshape(b, h2 * w2, 4 * c)                                  # [B, H2*W2, 4C]
        if self.norm is not None:
            x = self.norm(x)
        return self.reduction(x), (h2, w2)
