"""Swin's pre-norm (S)W-MSA + MLP block, with mmdet's state-dict keys."""
from __future__ import annotations

from typing import Optional

import torch
import torch.utils.checkpoint as cp
from timm.layers import DropPath
from torch import nn

from .ffn import FFN
from .layer_types import ActLayer, NormLayer
from .rope_tables import RopeTables
from .swin_attention import ShiftWindowMSA


class SwinBlock(nn.Module):
    """Pre-norm (S)W-MSA + MLP block. Keys: ``norm1, attn.w_msa.*, norm2, ffn.layers.*``.

    Args:
        embed_dims, num_heads, window_size: attention sizes.
        shift: SW-MSA with ``shift_size = window_size // 2``.
        mlp_ratio: MLP hidden size over ``embed_dims``.
        drop_rate, drop_path_rate: dropout / stochastic depth.
        norm_layer, act_layer: factories for the norms and the MLP activation.
        with_cp: activation checkpointing when the input requires grad.
        **attn_kwargs: :class:`~ropevit.layers.swin_attention.WindowMSA` options.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, *, shift: bool = False,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_layer: NormLayer = nn.LayerNorm, act_layer: ActLayer = nn.GELU,
                 with_cp: bool = False, **attn_kwargs) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = norm_layer(embed_dims)
        self.attn = ShiftWindowMSA(
            embed_dims, num_heads, window_size, shift_size=window_size // 2 if shift else 0,
            drop_path=DropPath(drop_path_rate) if drop_path_rate > 0 else None,
            proj_drop_rate=drop_rate, **attn_kwargs)
        self.norm2 = norm_layer(embed_dims)
        self.ffn = FFN(embed_dims, int(embed_dims * mlp_ratio), act_layer=act_layer, drop_rate=drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def _forward(self, x: torch.Tensor, hw: tuple[int, int], mask: Optional[torch.Tensor],
                 rope: Optional[RopeTables], window: Optional[tuple[int, int]]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw, mask, rope, window)
        return x + self.drop_path(self.ffn(self.norm2(x)))

    def forward(self, x: torch.Tensor, hw: tuple[int, int], mask: Optional[torch.Tensor] = None,
                rope: Optional[RopeTables] = None, window: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """``x [B, H*W, C]`` -> ``[B, H*W, C]``; ``window``: effective ``(window_size,
        shift_size)`` on this grid (default: the built ones)."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw, mask, rope, window, use_reentrant=False)
        return self._forward(x, hw, mask, rope, window)
