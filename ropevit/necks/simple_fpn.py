"""ViTDet's simple feature pyramid (Li et al., 2022) from one stride-16 map (plain PyTorch).

For each scale factor: 4 -> two 2x2 transposed convs (LayerNorm-2d + GELU between),
2 -> one transposed conv, 1 -> identity, 0.5 -> 2x2 max pool; then a 1x1 conv + norm
and a 3x3 conv + norm to ``out_channels``. Extra outputs beyond the scales (e.g. P6 for
RPN / RetinaNet) are stride-2 subsamplings of the last one, as in mmdet's ``FPN`` /
ViTDet's ``SimpleFPN``.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d as _TimmLayerNorm2d
from torch import nn

from ropevit.layers.tracing import contiguous, is_exporting

NormLayer2d = Callable[[int], nn.Module]


class LayerNorm2d(_TimmLayerNorm2d):
    """timm's channels-first LayerNorm (same keys, same eager forward). Under an exporter the
    channels-last copy is made explicit: a layer norm of a permuted view makes ``torch.export`` ask
    whether the batch or a side is 1, which would specialise the program to the example."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_exporting():
            return super().forward(x)
        x = contiguous(x.permute(0, 2, 3, 1))                                          # [B, H, W, C]
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return contiguous(x.permute(0, 3, 1, 2))                                       # [B, C, H, W]
ALLOWED_SCALES = (4.0, 2.0, 1.0, 0.5)


class SimpleFPN(nn.Module):
    """One ``[B, C, h, w]`` map -> maps at ``stride / s`` for each scale factor ``s``.

    Args:
        in_channels: channels ``C`` of the backbone map (divisible by 4 when 4 is a scale).
        out_channels: channels of every output.
        scale_factors: subset of ``(4.0, 2.0, 1.0, 0.5)``, in output order; with a
            stride-16 input the default gives strides 4, 8, 16, 32.
        num_outs: number of outputs (>= ``len(scale_factors)``); the extra ones are
            ``max_pool2d(kernel 1, stride 2)`` of the previous output (P6 ...).
        in_index: which backbone output to use when a list/tuple is given.
        norm_layer: channels-first norm factory (default LayerNorm-2d, eps 1e-6).
        act_layer: activation between the two transposed convs of scale 4.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, *,
                 scale_factors: Sequence[float] = ALLOWED_SCALES, num_outs: Optional[int] = None,
                 in_index: int = -1, norm_layer: Optional[NormLayer2d] = None,
                 act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        scale_factors = tuple(float(s) for s in scale_factors)
        bad = [s for s in scale_factors if s not in ALLOWED_SCALES]
        if bad or not scale_factors:
            raise ValueError(f'scale_factors={scale_factors}: {bad or "empty"} not allowed; use a non-empty subset '
                             f'of {ALLOWED_SCALES}')
        if 4.0 in scale_factors and in_channels % 4:
            raise ValueError(f'in_channels={in_channels} must be divisible by 4 for scale factor 4')
        if 2.0 in scale_factors and in_channels % 2:
            raise ValueError(f'in_channels={in_channels} must be divisible by 2 for scale factor 2')
        num_outs = len(scale_factors) if num_outs is None else num_outs
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} must be >= len(scale_factors)={len(scale_factors)}')
        if out_channels < 1:
            raise ValueError(f'out_channels={out_channels} must be >= 1')
        norm_layer = norm_layer or (lambda c: LayerNorm2d(c, eps=1e-6))
        C = in_channels
        self.scale_factors, self.num_outs, self.in_index = scale_factors, num_outs, in_index
        self.in_channels, self.out_channels = in_channels, out_channels

        self.scale_layers = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for s in scale_factors:
            if s == 4.0:
                layer = nn.Sequential(nn.ConvTranspose2d(C, C // 2, 2, 2), norm_layer(C // 2), act_layer(),
                                      nn.ConvTranspose2d(C // 2, C // 4, 2, 2))
                c = C // 4
            elif s == 2.0:
                layer, c = nn.ConvTranspose2d(C, C // 2, 2, 2), C // 2
            elif s == 1.0:
                layer, c = nn.Identity(), C
            else:
                layer, c = nn.MaxPool2d(2, 2, ceil_mode=True), C
            self.scale_layers.append(layer)
            self.lateral_convs.append(nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False),
                                                    norm_layer(out_channels)))
            self.output_convs.append(nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                                   norm_layer(out_channels)))
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-uniform convs (as detectron2's c2_xavier_fill), zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        """``[B, C, h, w]`` (or a list of them; ``in_index`` picks one) -> ``num_outs`` maps
        ``[B, out_channels, ceil(h * s), ceil(w * s)]``."""
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[self.in_index]
        outs = [conv(lat(layer(x))) for layer, lat, conv in
                zip(self.scale_layers, self.lateral_convs, self.output_convs)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
