"""The manual-softmax attention baseline, swapped into ropevit's own attention modules.

mmdet's ViTDet project (like detectron2's ViTDet and the original RoPE-ViT code) computes
attention by hand: ``softmax(q * scale @ k^T + mask) @ v``, materialising the
``[B, nh, N, N]`` score matrix. ropevit calls ``F.scaled_dot_product_attention``
instead. To compare the two on *the same architecture and the same weights*,
:func:`swap_attention` replaces the SDPA that ropevit's attention modules call with
:func:`manual_softmax_attention` for the duration of a ``with`` block. Only ropevit's
modules are touched (timm and mmdet keep their own attention).
"""
from __future__ import annotations

from typing import Callable, ContextManager, Optional, Sequence

import torch
import torch.nn.functional as F

from .swap import swap_calls


def manual_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                             is_causal: bool = False, scale: Optional[float] = None,
                             enable_gqa: bool = False) -> torch.Tensor:
    """``softmax(q * scale @ k^T + mask) @ v`` with SDPA's signature (as mmdet's ViTDet).

    Args:
        q, k, v: ``[B, nh, N, hd]`` (``k``/``v`` may have another length ``M``).
        attn_mask: bool (True = attend) or additive float mask broadcastable to ``[B, nh, N, M]``.
        dropout_p: attention dropout probability.
        scale: score scale (default ``hd ** -0.5``).
        is_causal, enable_gqa: not supported by the baseline (``ValueError``).

    Returns:
        ``[B, nh, N, hd]``.
    """
    if is_causal or enable_gqa:
        raise ValueError('manual_softmax_attention: is_causal / enable_gqa are not part of the baseline')
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)                      # [B, nh, N, M]
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float('-inf'))
        else:
            attn = attn + attn_mask
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v                                               # [B, nh, N, hd]


def swap_attention(fn: Callable[..., torch.Tensor] = manual_softmax_attention, *,
                   modules: Optional[Sequence[str]] = None) -> ContextManager[list[int]]:
    """Make ropevit's attention call ``fn`` instead of SDPA inside a ``with`` block.

    :func:`~benchmarks.swap.swap_calls` on ``torch.nn.functional.scaled_dot_product_attention``:
    yields a one-item call counter, so a caller can check the swap took effect.

    Args:
        fn: the attention function (SDPA's signature).
        modules: the modules to patch; ``None``: every loaded ``ropevit`` module (timm and
            mmdet keep their own attention).

    Raises:
        RuntimeError: none of ``modules`` calls SDPA in a way that can be swapped.
    """
    return swap_calls(F, 'scaled_dot_product_attention', fn, modules=modules)
