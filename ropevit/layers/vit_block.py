"""DeiT-III "LS" pre-norm ViT block with RoPE attention, global or windowed (ViTDet).

Keys (``norm1``, ``attn.qkv``, ``attn.proj``, ``gamma_1``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``, ``gamma_2``) match the original RoPE-ViT code and timm's ``EvaBlock``.
"""
from __future__ import annotations

from typing import Optional

import torch
from timm.layers import DropPath, Mlp, SwiGLU
from torch import nn

from .attention import RoPEAttention
from .layer_types import ActLayer, NormLayer
from .rope_tables import RopeTables, window_rope_tables
from .tracing import contiguous
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
            non-overlapping ``ws x ws`` windows of the patch grid (prefix tokens: each window
            sees them, and they attend globally).
        mlp_layer: ``'mlp'`` (``fc2(act(fc1))``, timm's ``Mlp``) or ``'swiglu'`` (EVA-02:
            ``fc2(norm(silu(fc1_g) * fc1_x))``, timm's ``SwiGLU``; ``act_layer`` is not used).
        mlp_norm: the LayerNorm inside the SwiGLU MLP (EVA-02's "sub-LN", timm's ``scale_mlp``).
        norm_layer, act_layer: factories.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 layer_scale_init_value: Optional[float] = 1e-5, window_size: int = 0, mlp_layer: str = 'mlp',
                 mlp_norm: bool = False, norm_layer: NormLayer = nn.LayerNorm,
                 act_layer: ActLayer = nn.GELU) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = RoPEAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        if mlp_layer == 'mlp':
            if mlp_norm:
                raise ValueError("mlp_norm=True needs mlp_layer='swiglu' (EVA-02's sub-LN MLP)")
            self.mlp = Mlp(dim, hidden, act_layer=act_layer, drop=proj_drop)
        elif mlp_layer == 'swiglu':
            self.mlp = SwiGLU(dim, hidden, drop=proj_drop)
            if mlp_norm:
                self.mlp.norm = norm_layer(hidden)                  # our factories take the channels only
        else:
            raise ValueError(f"mlp_layer={mlp_layer!r} is not supported; choose 'mlp' or 'swiglu'")
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
        B, _, C = x.shape
        H, W = hw
        ws, npt = self.window_size, num_prefix_tokens
        patches = contiguous(x[:, npt:]) if npt else x                # [B, H*W, C]
        win, padded_hw = pad_to_multiple(patches.reshape(B, H, W, C), ws)   # [B, Hp, Wp, C]
        win = window_partition(win, ws)                               # [B*nW, ws*ws, C]
        if key_mask is not None:                                      # [nW, 1, 1, ws*ws]
            key_mask = key_mask.repeat(B, 1, 1, 1)                    # [B*nW, 1, 1, ws*ws] (batch-major)
        if npt:
            # Prefix tokens are never windowed: every window sees them as extra tokens (identity
            # rows of the window tables), and they attend globally to all tokens.
            n_win = win.shape[0] // B
            prefix = contiguous(x[:, None, :npt].expand(B, n_win, npt, C)).view(-1, npt, C)   # [B*nW, npt, C]
            win = torch.cat([prefix, win], 1)                         # [B*nW, npt + ws*ws, C]
            if key_mask is not None:
                key_mask = torch.cat([key_mask.new_ones(*key_mask.shape[:-1], npt), key_mask], -1)
        win_rope = window_rope_tables(rope, hw, ws, B) if npt and rope is not None else rope
        win = self.attn(win, win_rope, key_mask=key_mask)[:, npt:]    # [B*nW, ws*ws, C]
        out = window_unpartition(win, ws, padded_hw, hw).reshape(B, H * W, C)   # [B, H*W, C]
        if not npt:
            return out
        prefix = self.attn(x, rope, num_queries=npt)                  # [B, npt, C]: global
        return torch.cat([prefix, out], 1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], rope: Optional[RopeTables] = None, *,
                num_prefix_tokens: int = 0, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``[B, npt + H*W, C]`` (``npt = num_prefix_tokens``).
            hw: patch grid ``(H, W)``.
            rope: the tables of this block's attention grid: ``H x W`` with ``npt`` identity
                rows first (global), or ``ws x ws`` (window; window-local coordinates, RoPE
                being relative); window blocks with prefix tokens take the global tables and cut
                the windows out of them (a prefix token sees a patch's absolute angle).
            key_mask: window blocks: ``[nW, 1, 1, ws*ws]`` bool, False on padding.

        Returns:
            ``[B, npt + H*W, C]``.
        """
        y = self._attn(self.norm1(x), hw, rope, num_prefix_tokens, key_mask)
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)
