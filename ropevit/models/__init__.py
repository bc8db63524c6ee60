"""Backbones (plain PyTorch)."""
from .swin import RoPESwin  # noqa: F401
from .vit import RoPEViT  # noqa: F401
