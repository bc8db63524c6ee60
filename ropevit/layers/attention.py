"""Multi-head self-attention with 2D RoPE on patch tokens, through
``torch.nn.functional.scaled_dot_product_attention``.

State-dict keys (``qkv``, ``proj``) match timm's ``AttentionRope`` and the original
RoPE-ViT code, so their checkpoints load without renaming.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope

#: ``(cos, sin)`` float32 tables, each ``[N, P]`` (shared by heads) or ``[nh, N, P]``, optionally
#: followed by their complex ``rope_rotation`` (or None).
RopeTables = Union[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]]


class RoPEAttention(nn.Module):
    """Self-attention; q/k of the patch tokens are rotated, prefix tokens are not.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nh``; ``hd = C // nh``.
        qkv_bias: bias in the fused qkv projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim={dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, rope: Optional[RopeTables] = None, *,
                num_prefix_tokens: int = 0, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``[B, npt + N, C]``: ``num_prefix_tokens`` prefix tokens, then ``N`` patch
                tokens in the row-major order of the grid the rope tables were built for.
            rope: ``(cos, sin)`` or ``(cos, sin, rot)`` for the ``N`` patch tokens (``[N, P]`` or ``[nh, N, P]``), or
                for all ``npt + N`` tokens with identity rows (``cos = 1, sin = 0``) for the
                prefix, which saves slicing q/k and concatenating them back; or None.
            num_prefix_tokens: leading tokens that are not rotated (class token).
            key_mask: bool, True = may be attended, broadcastable to ``[B, nh, L, L]``
                (e.g. ``[B, 1, 1, L]`` to hide padding keys), or None.

        Returns:
            ``[B, npt + N, C]``.
        """
        B, L, C = x.shape
        npt = num_prefix_tokens
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # [B, L, 3, nh, hd]
        qkv = qkv.permute(2, 0, 3, 1, 4)                                    # [3, B, nh, L, hd]
        v = qkv[2]                                                         # [B, nh, L, hd]
        qk = qkv[:2]                                                       # [2, B, nh, L, hd]
        if rope is not None:
            cos, sin = rope[0], rope[1]
            rot = rope[2] if len(rope) > 2 else None
            # q and k in one call (one pass, half the launches). Out of place: rotating a slice
            # of q/k in place would break autograd.
            if npt and cos.shape[-2] == L - npt:
                qk = torch.cat([qk[..., :npt, :], apply_rope(qk[..., npt:, :], cos, sin, rot)], dim=-2)
            else:                               # tables for all L tokens (prefix rows: identity)
                qk = apply_rope(qk, cos, sin, rot)
        q, k = qk.unbind(0)                                                # [B, nh, L, hd] each
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.attn_drop if self.training else 0.0)  # [B, nh, L, hd]
        x = x.transpose(1, 2).reshape(B, L, C)                             # [B, L, C]
        return self.proj_drop(self.proj(x))
