"""From-scratch weight init shared by the backbones (timm's ViT / DeiT-III and mmdet's Swin agree)."""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn


def init_scratch_weights(model: nn.Module, extra: Iterable[Optional[torch.Tensor]] = ()) -> None:
    """trunc-normal(0.02) ``Linear`` weights with zero biases and unit ``LayerNorm``, then
    trunc-normal(0.02) for each tensor of ``extra`` in order (class token, position
    embedding, bias tables; None skipped).

    Convolutions keep PyTorch's init; RoPE-Mixed frequencies and LayerScale keep their
    construction init. The order (modules first, then ``extra``) fixes the random stream.
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for p in extra:
        if p is not None:
            nn.init.trunc_normal_(p, std=0.02)
