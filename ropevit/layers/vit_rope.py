"""RoPE frequencies of a plain ViT and their per-grid tables.

``VisionRoPE`` holds RoPE-Mixed's learnable ``freqs`` ``[2, depth, nh, hd // 2]``
(state-dict key ``rope.freqs``, as in timm's port); RoPE-Axial has nothing to hold: its
fixed frequencies are rebuilt from ``theta`` (:func:`ropevit.layers.rope_tables.axial_tables`)
and never enter a checkpoint. Tables follow :mod:`ropevit.layers.rope_tables`: axial ones
cached per grid, mixed ones rebuilt once per grid per forward from cached coordinates.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from torch import nn

from .rope import init_mixed_frequencies
from .rope_coords import CoordMap
from .rope_tables import RopeTables, TableCache, axial_tables, build_rope_tables, token_coords

#: distinct (grid, device, ...) entries kept; multi-scale training cycles through a few.
CACHE_SIZE = 16


class VisionRoPE(nn.Module):
    """Frequencies and :class:`RopeTables` for RoPE-Axial / RoPE-Mixed.

    Args:
        head_dim: ``hd`` (divisible by 4).
        num_heads: ``nh``.
        depth: number of blocks (mixed: one frequency set per block).
        rope_type: ``'axial'`` (fixed) or ``'mixed'`` (learnable).
        theta: axial theta, or the mixed init theta.
    """

    def __init__(self, head_dim: int, num_heads: int, depth: int, *,
                 rope_type: Literal['axial', 'mixed'], theta: float) -> None:
        super().__init__()
        if rope_type not in ('axial', 'mixed'):
            raise ValueError(f'VisionRoPE: rope_type={rope_type!r}; allowed: "axial", "mixed"')
        self.rope_type = rope_type
        self.head_dim, self.num_heads, self.depth, self.theta = head_dim, num_heads, depth, float(theta)
        if rope_type == 'mixed':
            self.freqs = nn.Parameter(init_mixed_frequencies(head_dim, num_heads, depth, theta))  # [2, D, nh, P]
        self._cache = TableCache(CACHE_SIZE)

    def tables(self, hw: tuple[int, int], device: torch.device, block_ids: Optional[Sequence[int]] = None,
               num_prefix_tokens: int = 0, cmap: Optional[CoordMap] = None, cache: bool = True) -> RopeTables:
        """Tables for an ``H x W`` grid, starting with ``num_prefix_tokens`` identity rows.

        ``cmap``: the grid's coordinate map (:mod:`ropevit.layers.rope_coords`; None = patch
        indices). ``cache=False`` builds without keeping (randomly augmented coordinates).

        Returns:
            axial: ``[npt + H*W, P]`` (shared by all blocks and heads; cached).
            mixed: ``[len(block_ids), nh, npt + H*W, P]`` (``block_ids`` default: all blocks).
        """
        npt = num_prefix_tokens
        cmap = cmap or CoordMap()
        get = self._cache.get if cache else (lambda _key, build: build())
        if self.rope_type == 'axial':
            return get(('axial', *hw, npt, str(device), *cmap),
                       lambda: axial_tables(self.head_dim, self.theta, hw, device, num_prefix_tokens=npt, cmap=cmap))
        coords = get(('coords', *hw, npt, str(device), *cmap),
                     lambda: token_coords(hw, num_prefix_tokens=npt, device=device, cmap=cmap))  # [npt+N, 2]
        all_blocks = block_ids is None or list(block_ids) == list(range(self.depth))
        freqs = self.freqs if all_blocks else self.freqs[:, list(block_ids)]                     # [2, D', nh, P]
        return build_rope_tables(freqs, coords, num_prefix_tokens=npt)                          # [D', nh, npt+N, P]

    def block_tables(self, hw: tuple[int, int], device: torch.device, block_ids: Sequence[int],
                     num_prefix_tokens: int = 0, cmap: Optional[CoordMap] = None,
                     cache: bool = True) -> list[RopeTables]:
        """One :class:`RopeTables` per block of ``block_ids`` (axial: the same shared table)."""
        tables = self.tables(hw, device, block_ids, num_prefix_tokens, cmap, cache)
        return [tables] * len(block_ids) if self.rope_type == 'axial' else tables.unstack()

    def extra_repr(self) -> str:
        return (f'rope_type={self.rope_type!r}, head_dim={self.head_dim}, num_heads={self.num_heads}, '
                f'theta={self.theta}')
