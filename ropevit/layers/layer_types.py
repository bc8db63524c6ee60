"""Factory types the layers take for their norms and activations (detectron2 / timm style)."""
from __future__ import annotations

from typing import Callable

from torch import nn

#: ``channels -> norm module`` (e.g. ``nn.LayerNorm``).
NormLayer = Callable[[int], nn.Module]
#: ``() -> activation module`` (e.g. ``nn.GELU``).
ActLayer = Callable[[], nn.Module]
