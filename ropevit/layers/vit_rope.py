"""RoPE tables for a plain ViT: one module per model, one table per grid per forward.

``VisionRoPE`` holds the frequencies (RoPE-Mixed: the learnable ``freqs`` parameter
``[2, depth, nh, hd // 2]``, state-dict key ``rope.freqs`` as in timm's port; RoPE-Axial:
a non-persistent buffer ``[2, hd // 2]`` that never enters a checkpoint) and builds the
``(cos, sin)`` tables the blocks receive. Fixed (axial) tables are cached across
forwards, keyed by grid size and device; learnable (mixed) tables are rebuilt once per
grid per forward so gradients reach ``freqs``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Literal, Optional, Sequence

import torch
from torch import nn

from .rope import axial_frequencies, grid_coords, init_mixed_frequencies, is_compiling, rope_cos_sin, rope_rotation

_CACHE_SIZE = 16  # distinct (grid, device) entries kept; multi-scale training cycles through a few


class VisionRoPE(nn.Module):
    """Frequencies and ``(cos, sin)`` tables for RoPE-Axial / RoPE-Mixed.

    Args:
        head_dim: ``hd`` (divisible by 4).
        num_heads: ``nh``.
        depth: number of blocks (mixed: one frequency set per block).
        rope: ``'axial'`` (fixed) or ``'mixed'`` (learnable).
        theta: axial theta, or the mixed init theta.
    """

    def __init__(self, head_dim: int, num_heads: int, depth: int, *,
                 rope: Literal['axial', 'mixed'], theta: float) -> None:
        super().__init__()
        if rope not in ('axial', 'mixed'):
            raise ValueError(f'VisionRoPE: rope={rope!r}; allowed: "axial", "mixed"')
        self.rope = rope
        self.head_dim, self.num_heads, self.depth, self.theta = head_dim, num_heads, depth, float(theta)
        if rope == 'mixed':
            self.freqs = nn.Parameter(init_mixed_frequencies(head_dim, num_heads, depth, theta))  # [2, D, nh, P]
        else:
            self.register_buffer('freqs', axial_frequencies(head_dim, theta), persistent=False)  # [2, P]
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, ...]] = OrderedDict()

    def _cached(self, key: tuple, build) -> tuple[torch.Tensor, ...]:
        if is_compiling():
            # Traced as constants instead: a cache filled by the first compiled call would
            # fail Dynamo's guard on the second and recompile the whole backbone.
            return build()
        # Tensors made under inference_mode cannot be saved for backward later: keyed apart.
        key = key + (torch.is_inference_mode_enabled(),)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = build()
        self._cache[key] = value
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return value

    def coords(self, hw: tuple[int, int], device: torch.device, num_prefix_tokens: int = 0) -> torch.Tensor:
        """Cached ``[npt + H*W, 2]`` float32 ``(x, y)`` coordinates (row-major tokens).

        The ``npt`` prefix tokens sit at ``(0, 0)``: angle 0, so ``cos = 1``, ``sin = 0``
        and their rotation is exactly the identity.
        """
        h, w = hw

        def build() -> tuple[torch.Tensor]:
            grid = grid_coords(h, w, device=device)                                     # [H*W, 2]
            if num_prefix_tokens:
                grid = torch.cat([grid.new_zeros(num_prefix_tokens, 2), grid])          # [npt + H*W, 2]
            return (grid,)
        return self._cached(('coords', h, w, num_prefix_tokens, str(device)), build)[0]

    def tables(self, hw: tuple[int, int], device: torch.device,
               block_ids: Optional[Sequence[int]] = None,
               num_prefix_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` float32 tables for an ``H x W`` grid.

        With ``num_prefix_tokens``, the tables start with that many identity rows
        (``cos = 1``, ``sin = 0``), so attention can rotate the prefix and patch tokens
        together, without slicing q/k and concatenating them back.

        Returns:
            axial: ``[npt + H*W, P]`` each (shared by all blocks and heads; cached).
            mixed: ``[len(block_ids), nh, npt + H*W, P]`` each (``block_ids`` default: all blocks).
        """
        h, w = hw
        npt = num_prefix_tokens
        if self.rope == 'axial':
            def build() -> tuple[torch.Tensor, torch.Tensor]:
                # Recomputed from theta (not the buffer) so a .half() model keeps float32 tables.
                freqs = axial_frequencies(self.head_dim, self.theta, device=device)   # [2, P]
                with torch.no_grad():
                    return rope_cos_sin(freqs, self.coords(hw, device, npt))           # [npt+N, P] x2
            cos, sin = self._cached(('axial', h, w, npt, str(device)), build)
            return cos, sin
        all_blocks = block_ids is None or list(block_ids) == list(range(self.depth))
        freqs = self.freqs if all_blocks else self.freqs[:, list(block_ids)]         # [2, D', nh, P]
        return rope_cos_sin(freqs, self.coords(hw, device, npt))                     # [D', nh, npt+N, P] x2

    def rotation_tables(self, hw: tuple[int, int], device: torch.device,
                        block_ids: Optional[Sequence[int]] = None, num_prefix_tokens: int = 0
                        ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`tables` plus their complex ``rope_rotation`` (cached with them for axial),
        so attention does not rebuild it per block. The rotation is None while
        ``torch.compile`` traces (the compiled form uses ``cos``/``sin``)."""
        cos, sin = self.tables(hw, device, block_ids, num_prefix_tokens)
        if is_compiling():
            return cos, sin, None
        if self.rope == 'axial':
            h, w = hw
            rot = self._cached(('axial-rot', h, w, num_prefix_tokens, str(device)),
                               lambda: (rope_rotation(cos, sin),))[0]
            return cos, sin, rot
        return cos, sin, rope_rotation(cos, sin)

    def extra_repr(self) -> str:
        return f'rope={self.rope!r}, head_dim={self.head_dim}, num_heads={self.num_heads}, theta={self.theta}'
