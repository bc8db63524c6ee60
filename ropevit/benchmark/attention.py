"""The manual-softmax attention baseline, swapped into ropevit's own attention modules.

mmdet's ViTDet project (like detectron2's ViTDet and the original RoPE-ViT code) computes
attention by hand: ``softmax(q * scale @ k^T + mask) @ v``, materialising the
``[B, nh, N, N]`` score matrix. ropevit calls ``F.scaled_dot_product_attention``
instead. To compare the two on *the same architecture and the same weights*,
:func:`swap_attention` replaces the SDPA that ropevit's attention modules call with
:func:`manual_softmax_attention` for the duration of a ``with`` block. Only the named
ropevit modules are touched (timm and mmdet keep their own attention).
"""
from __future__ import annotations

import importlib
import types
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

#: ropevit modules whose SDPA calls :func:`swap_attention` replaces (those that exist).
ROPEVIT_ATTENTION_MODULES: tuple[str, ...] = ('ropevit.layers.attention', 'ropevit.layers.swin_attention',
                                              'ropevit.models.vit')


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


class _FunctionalWith(types.ModuleType):
    """``torch.nn.functional`` with ``scaled_dot_product_attention`` replaced."""

    def __init__(self, sdpa: Callable[..., torch.Tensor]) -> None:
        super().__init__('torch.nn.functional (benchmark attention swap)')
        self.scaled_dot_product_attention = sdpa

    def __getattr__(self, name: str):
        return getattr(F, name)


@contextmanager
def swap_attention(fn: Callable[..., torch.Tensor] = manual_softmax_attention, *,
                   modules: Sequence[str] = ROPEVIT_ATTENTION_MODULES) -> Iterator[list[int]]:
    """Make ropevit's attention modules call ``fn`` instead of SDPA inside the block.

    Handles both ``import torch.nn.functional as F`` (the module's ``F`` is replaced by
    a view of ``torch.nn.functional`` whose SDPA is ``fn``) and a direct
    ``from torch.nn.functional import scaled_dot_product_attention``. Yields a one-item
    list counting the calls of ``fn``, so a caller can check the swap took effect.

    Raises:
        RuntimeError: none of ``modules`` calls SDPA in a way that can be swapped.
    """
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return fn(*args, **kwargs)

    patched: list[tuple[types.ModuleType, str, object]] = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for attr, value in list(vars(mod).items()):
            if value is F:
                patched.append((mod, attr, value))
                setattr(mod, attr, _FunctionalWith(counted))
            elif value is F.scaled_dot_product_attention:
                patched.append((mod, attr, value))
                setattr(mod, attr, counted)
    if not patched:
        raise RuntimeError(f'swap_attention: none of {list(modules)} refers to torch.nn.functional or '
                           f'scaled_dot_product_attention; the manual-softmax baseline cannot be built')
    try:
        yield calls
    finally:
        for mod, attr, value in patched:
            setattr(mod, attr, value)
