"""Backbones (plain PyTorch)."""
from .swin import RoPESwin  # noqa: F401
