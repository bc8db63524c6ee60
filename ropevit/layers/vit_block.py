"""DeiT-III "LS" pre-norm ViT block with RoPE attention, global or windowed (ViTDet).

Keys (``norm1``, ``attn.qkv``, ``attn.proj``, ``gamma_1``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``, ``gamma_2``) match the original RoPE-ViT code and timm's ``EvaBlock``.
"""
from __future__ import annotations

from typing import Optional

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from .attention import RoPEAttention
from .layer_types import ActLayer, NormLayer
from .rope_tables import RopeTables
from .window import pad_to_multiple, window_partition, window_unpartition


class ViTBlock(nn.Module):
    """``x + gamma_1 * attn(norm1(x))``, then ``x + gamma_2 * mlp(norm2(x))``.

    Args:
        dim: channels ``C``.
        num_heads: heads.
        mlp_ratio: MLP hidden size / ``C``.
        qkv_bias: bias in qkv.
        drop_path: stochastic depth rate of this block.
        attn_drop, proj_drop: dropout rates.
        layer_scale_init_value: initial LayerScale ``gamma``; None or 0 disables LayerScale.
        window_size: 0 = global attention over all tokens; ``ws > 0`` = attention inside
            non-overlapping ``ws x ws`` windows of the patch grid (no prefix tokens allowed).
        norm_layer, act_layer: factories.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 layer_scale_init_value: Optional[float] = 1e-5, window_size: int = 0,
                 norm_layer: NormLayer = nn.LayerNorm, act_layer: ActLayer = nn.GELU) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = RoPEAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        if layer_scale_init_value:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma_1 = self.gamma_2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attn(self, x: torch.Tensor, hw: tuple[int, int], rope: Optional[RopeTables],
              num_prefix_tokens: int, key_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if not self.window_size:
            return self.attn(x, rope)                                 # tables with the prefix rows
        if num_prefix_tokens:
            raise ValueError('window attention got prefix tokens; build the model with with_cls_token=False')
        B, _, C = x.shape
        H, W = hw
        ws = self.window_size
        x, padded_hw = pad_to_multiple(x.view(B, H, W, C), ws)       # [B, Hp, Wp, C]
        x = window_partition(x, ws)                                   # [B*nW, ws*ws, C]
        if key_mask is not None:                                      # [nW, 1, 1, ws*ws]
            key_mask = key_mask.repeat(B, 1, 1, 1)                    # [B*nW, 1, 1, ws*ws] (batch-major)
        x = self.attn(x, rope, key_mask=key_mask)                     # [B*nW, ws*ws, C]
        x = window_unpartition(x, ws, padded_hw, hw)                  # [B, H, W, C]
        return x.view(B, H * W, C)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], rope: Optional[RopeTables] = None, *,
                num_prefix_tokens: int = 0, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``[B, npt + H*W, C]`` (``npt = num_prefix_tokens``; 0 for window blocks).
            hw: patch grid ``(H, W)``.
            rope: the tables of this block's attention grid: ``H x W`` with ``npt`` identity
                rows first (global), or ``ws x ws`` (window; window-local coordinates, RoPE
                being relative).
            key_mask: window blocks: ``[nW, 1, 1, ws*ws]`` bool, False on padding.

        Returns:
            ``[B, npt + H*W, C]``.
        """
        y = self._attn(self.norm1(x), hw, rope, num_prefix_tokens, key_mask)
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)
