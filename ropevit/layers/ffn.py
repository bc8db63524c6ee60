"""Swin's MLP with mmdet's ``FFN`` keys (RoPE-ViT uses timm's ``Mlp``, whose keys it loads)."""
from __future__ import annotations

import torch
from torch import nn

from .layer_types import ActLayer


class FFN(nn.Module):
    """``fc2(drop(act(fc1(x))))`` then dropout; keys ``layers.0.0`` (fc1) and ``layers.1`` (fc2)."""

    def __init__(self, embed_dims: int, hidden_dims: int, *, act_layer: ActLayer = nn.GELU,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden_dims), act_layer(), nn.Dropout(drop_rate)),
            nn.Linear(hidden_dims, embed_dims),
            nn.Dropout(drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)                  # [..., C] -> [..., C]
