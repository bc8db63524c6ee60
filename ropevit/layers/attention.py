"""Multi-head self-attention with 2D RoPE on patch tokens, through
``torch.nn.functional.scaled_dot_product_attention``.

State-dict keys (``qkv``, ``proj``) match timm's ``AttentionRope`` and the original
RoPE-ViT code, so their checkpoints load without renaming.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope
from .rope_tables import RopeTables
from .tracing import is_exporting


class RoPEAttention(nn.Module):
    """Self-attention with q/k rotated by :class:`~ropevit.layers.rope_tables.RopeTables`.

    Prefix tokens take one path: the tables carry identity rows for them, so all tokens
    are rotated in one call and the prefix tokens come out unchanged.

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
                key_mask: Optional[torch.Tensor] = None, num_queries: Optional[int] = None) -> torch.Tensor:
        """
        Args:
            x: ``[B, L, C]``: ``rope.num_prefix_tokens`` prefix tokens, then the patch tokens in
                the row-major order of the grid the tables were built for.
            rope: tables with one row per token of ``x`` (``[L, P]`` or ``[nh, L, P]``), or None.
            key_mask: bool, True = may be attended, broadcastable to ``[B, nh, L, L]``
                (e.g. ``[B, 1, 1, L]`` to hide padding keys), or None.
            num_queries: only the first ``num_queries`` tokens query (all tokens are keys), e.g.
                the prefix tokens' global attention beside window blocks.

        Returns:
            ``[B, L, C]`` (``[B, num_queries, C]``).
        """
        B, L, C = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # [B, L, 3, nh, hd]
        qkv = qkv.permute(2, 0, 3, 1, 4)                                    # [3, B, nh, L, hd]
        v = qkv[2]                                                         # [B, nh, L, hd]
        qk = qkv[:2]                                                       # [2, B, nh, L, hd]
        if rope is not None:
            if not is_exporting() and rope.cos.shape[-2] != L:
                raise ValueError(f'RoPE tables have {rope.cos.shape[-2]} rows ({rope.num_prefix_tokens} prefix), '
                                 f'x has {L} tokens; build the tables with one identity row per prefix token')
            # q and k in one call (one pass, half the launches); out of place for autograd.
            qk = apply_rope(qk, rope.cos, rope.sin, rope.rot)
        q, k = qk.unbind(0)                                                # [B, nh, L, hd] each
        if num_queries is not None:
            q = q[:, :, :num_queries]                                      # [B, nh, Lq, hd]
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.attn_drop if self.training else 0.0)  # [B, nh, Lq, hd]
        x = x.transpose(1, 2).reshape(B, q.shape[2], C)                    # [B, Lq, C]
        return self.proj_drop(self.proj(x))
