"""Adaptive average pooling that exports with dynamic input sizes.

``nn.AdaptiveAvgPool2d(k)`` with ``k > 1`` (UperNet's / PSPNet's pyramid pooling) has no
ONNX form for an input size unknown at export time: TorchScript's exporter refuses it and
the dynamo exporter bakes the example's bin indices. The same pooling is a matrix product
with bin-averaging weights built from the input's size inside the graph
(:func:`adaptive_pool_weights`); eager calls ``F.adaptive_avg_pool2d`` as before.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ropevit.layers.tracing import is_exporting


def adaptive_pool_weights(out_size: int, in_size, *, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[out, in]`` float32: row ``i`` averages input cells ``[floor(i n / k), ceil((i + 1) n / k))``
    (``n = in_size``, ``k = out_size``), PyTorch's adaptive-pooling bins. ``in_size`` may be symbolic."""
    j = torch.arange(in_size, device=device, dtype=torch.float32)            # [in]
    n = torch.ones_like(j).sum()                                              # [] = in, as a tensor (exact)
    i = torch.arange(out_size, device=device, dtype=torch.float32)[:, None]  # [out, 1]
    start = torch.floor(i * n / out_size)                                     # [out, 1]
    end = torch.ceil((i + 1) * n / out_size)                                  # [out, 1]
    inside = ((j[None] >= start) & (j[None] < end)).float()                   # [out, in]
    return inside / (end - start)                                             # [out, in]


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)``; under an exporter, ``Wh @ x @ Ww^T``."""

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_exporting():
            return F.adaptive_avg_pool2d(x, self.output_size)
        kh, kw = (self.output_size, self.output_size) if isinstance(self.output_size, int) else self.output_size
        h, w = x.shape[-2:]
        wh = adaptive_pool_weights(kh if kh is not None else h, h, device=x.device).to(x.dtype)   # [kh, H]
        ww = adaptive_pool_weights(kw if kw is not None else w, w, device=x.device).to(x.dtype)   # [kw, W]
        return torch.matmul(torch.matmul(wh, x), ww.t())                    # [B, C, kh, kw]

    def extra_repr(self) -> str:
        return f'output_size={self.output_size}'


def make_pooling_exportable(model: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` of ``model`` whose output is not 1x1 (a global
    pool exports as it is) by :class:`ExportableAdaptiveAvgPool2d`, in place; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                setattr(parent, name, ExportableAdaptiveAvgPool2d(child.output_size))
                swapped += 1
    return swapped
