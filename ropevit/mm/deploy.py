"""What of an mmdet / mmseg model can be exported, as plain ``image -> tensors`` modules.

* Segmentors (mmseg ``EncoderDecoder``): the **whole** model. Backbone, neck and decode head
  (UperNet, FCN: convolutions, pooling, resizes) are standard ops; the output is the
  per-class logits resized to the input, as ``EncoderDecoder.predict`` computes them
  before the argmax (the auxiliary head is a training-only branch and is left out). Its
  pyramid pooling (``AdaptiveAvgPool2d(k > 1)``) is swapped for the same pooling as a
  matrix product (``ropevit.deploy.pooling``), the one form that exports with dynamic sizes.
* Detectors (mmdet): **backbone + neck**, the feature pyramid. RPN proposal selection and
  the RoI heads need mmcv's ``RoIAlign`` and ``nms`` (``mmcv::`` custom ops with no
  standard ONNX form); they are not exported. Run them in PyTorch on the exported
  features, or export the full detector with mmdeploy and its custom-op plugins.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

ExportPart = Literal['backbone+neck', 'segmentor']


class FeaturePyramid(nn.Module):
    """``image [B, 3, H, W]`` -> the neck's maps (or the backbone's, without a neck) of a detector."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.neck = detector.neck if getattr(detector, 'with_neck', False) else None

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(image)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)


class SegmentorLogits(nn.Module):
    """``image [B, 3, H, W]`` -> ``[B, num_classes, H, W]`` logits of an mmseg ``EncoderDecoder``
    (backbone, neck, decode head, then the bilinear resize to the input of
    ``EncoderDecoder.encode_decode``)."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        from ropevit.deploy.pooling import make_pooling_exportable
        make_pooling_exportable(segmentor)
        self.segmentor = segmentor
        self.align_corners = bool(getattr(segmentor.decode_head, 'align_corners', False))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feats = self.segmentor.extract_feat(image)
        logits = self.segmentor.decode_head.forward(feats)                          # [B, K, H/4, W/4]
        return F.interpolate(logits, size=image.shape[2:], mode='bilinear',
                             align_corners=self.align_corners)                      # [B, K, H, W]


def exportable_part(model: nn.Module, scope: str) -> tuple[nn.Module, ExportPart]:
    """The module to export from a built mm model of ``scope`` (``'mmdet'`` or ``'mmseg'``)."""
    if scope == 'mmseg':
        if not (hasattr(model, 'extract_feat') and hasattr(model, 'decode_head')):
            raise ValueError(f'{type(model).__name__} is not an encoder-decoder segmentor (no extract_feat / '
                             f'decode_head); tools/export.py exports mmseg EncoderDecoder models')
        return SegmentorLogits(model).eval(), 'segmentor'
    if not hasattr(model, 'backbone'):
        raise ValueError(f'{type(model).__name__} has no backbone to export')
    return FeaturePyramid(model).eval(), 'backbone+neck'


NOT_EXPORTED = {
    'backbone+neck': ('the RPN and RoI heads are not exported: they need mmcv\'s RoIAlign and nms custom ops, '
                      'which have no standard ONNX form (run them in PyTorch on the exported features, or use '
                      'mmdeploy with its custom-op plugins)'),
    'segmentor': 'the auxiliary head (training only) is not exported',
}
