"""A Swin stage: its blocks, the window each uses on the actual grid, and the masks and
RoPE tables built once per forward for all of them."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .patch_merging import PatchMerging
from .rope import RopeType
from .rope_coords import CoordMap, RopeCoords, augment_map, coord_map
from .rope_tables import RopeTables, TableCache, axial_tables, build_rope_tables, token_coords
from .swin_block import SwinBlock
from .window import WindowRule, check_window_rule, effective_window, padded_size, shifted_window_mask

#: Grids whose masks a stage keeps. One: a fixed-size loop (sliding-window inference, a
#: benchmark, video) hits it; a stage-0 mask of Swin-T at 800x1333 is ~13 MB, so keeping
#: every size of multi-scale training would cost hundreds of MB.
MASK_CACHE_SIZE = 1
#: Windows whose RoPE inputs a stage keeps (axial tables or mixed coordinates): the window
#: only changes with the grid under ``window_rule='original'``.
ROPE_CACHE_SIZE = 1

Masks = tuple[Optional[torch.Tensor], Optional[torch.Tensor]]


class SwinStage(nn.Module):
    """``depth`` blocks alternating W-MSA / SW-MSA, then an optional ``downsample``.

    The stage picks, once per forward, the effective window and shift for its grid
    (``window_rule``, :func:`~ropevit.layers.window.effective_window`), and builds the
    additive masks (one for the unshifted and one for the shifted blocks) and the
    :class:`~ropevit.layers.rope_tables.RopeTables` of all its blocks for that window. Axial
    tables depend only on the window and device and are cached across forwards.

    Args:
        embed_dims, num_heads, depth, window_size: stage sizes.
        rope: ``'mixed' | 'axial' | 'none'``; rope_theta: its theta.
        mask_padding: mask padded tokens out of attention (False reproduces mmdet's
            Swin, where padded zeros take part as keys).
        window_rule: ``'mmdet'`` (always ``window_size``, shifted blocks always shift) or
            ``'original'`` (Microsoft's Swin: a grid with ``min(H, W) <= window_size``
            gets window ``min(H, W)`` and no shift).
        rope_coords: the coordinate rule (:mod:`ropevit.layers.rope_coords`), applied to the
            stage's whole grid: a window gets local indices times the grid's step, so with
            ``'interpolate'`` / ``'normalized'`` a window's positions depend on the image size.
        ref_grid: the stage's reference grid in tokens (``'interpolate'``).
        drop_path_rates: one stochastic-depth rate per block.
        downsample: patch merging after the blocks, or None.
        **block_kwargs: :class:`~ropevit.layers.swin_block.SwinBlock` options.
    """

    def __init__(self, embed_dims: int, num_heads: int, depth: int, window_size: int, *,
                 rope: RopeType = 'mixed', rope_theta: float = 10.0, mask_padding: bool = True,
                 window_rule: WindowRule = 'mmdet', rope_coords: RopeCoords = 'index',
                 ref_grid: Optional[tuple[float, float]] = None, drop_path_rates: Optional[Sequence[float]] = None,
                 downsample: Optional[PatchMerging] = None, **block_kwargs) -> None:
        super().__init__()
        check_window_rule(window_rule)
        self.window_size = window_size
        self.rope_type = rope
        self.rope_theta = float(rope_theta)
        self.head_dim = embed_dims // num_heads
        self.mask_padding = mask_padding
        self.window_rule = window_rule
        self.rope_coords = rope_coords
        self.ref_grid = ref_grid
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.ModuleList([
            SwinBlock(embed_dims, num_heads, window_size, shift=i % 2 == 1, drop_path_rate=rates[i],
                      rope=rope, rope_theta=rope_theta, **block_kwargs)
            for i in range(depth)])
        self.downsample = downsample
        self._rope_cache = TableCache(ROPE_CACHE_SIZE)
        self._mask_cache = TableCache(MASK_CACHE_SIZE)

    def window_plan(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Effective ``(window_size, shift_size of the shifted blocks)`` on an ``hw`` grid."""
        return effective_window(hw, self.window_size, self.window_size // 2, self.window_rule)

    def coord_map(self, hw: tuple[int, int], coord_aug: Optional[tuple[float, float, float, float]] = None
                  ) -> CoordMap:
        """The steps of the window-local coordinates on an ``hw`` grid (offsets dropped: windows
        see coordinate differences only); ``coord_aug``: a draw of ``sample_augment``."""
        cmap = coord_map(hw, self.rope_coords, self.ref_grid)
        if coord_aug is not None:
            cmap = augment_map(cmap, *coord_aug)
        return cmap.local()

    def block_tables(self, device: torch.device, window_size: Optional[int] = None,
                     cmap: Optional[CoordMap] = None) -> list[Optional[RopeTables]]:
        """One :class:`RopeTables` per block for a ``window_size`` window (default: the built one),
        window-local coordinates ``0 .. ws-1`` times ``cmap``'s steps (None: the indices);
        None per block for ``rope='none'``.

        Axial: the stage's cached table, shared. Mixed: the blocks' learnable frequencies
        stacked, so one table call per stage and forward builds every block's
        ``[nh, ws*ws, P]`` table (gradients flow back to each block's ``rope_freqs``).
        """
        n = len(self.blocks)
        if self.rope_type == 'none':
            return [None] * n
        ws = self.window_size if window_size is None else window_size
        cmap = cmap or CoordMap()
        key = (self.rope_type, ws, device, *cmap)
        if self.rope_type == 'axial':
            tables = self._rope_cache.get(key, lambda: axial_tables(self.head_dim, self.rope_theta, (ws, ws), device,
                                                                    cmap=cmap))
            return [tables] * n
        coords = self._rope_cache.get(key, lambda: token_coords((ws, ws), device=device, cmap=cmap))  # [ws*ws, 2]
        freqs = torch.stack([blk.attn.w_msa.rope_freqs for blk in self.blocks], 1)             # [2, D, nh, P]
        return build_rope_tables(freqs, coords).unstack()                                      # D x [nh, N, P]

    def attention_masks(self, hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> Masks:
        """``[nW, N, N]`` additive masks (or None) for unshifted and shifted blocks.

        The last grid's masks are cached (:data:`MASK_CACHE_SIZE`): building them takes
        ~20 small kernels per stage, which a launch-bound GPU at batch 1 would pay on every
        forward. The effective window is a function of the grid (and the fixed window rule),
        so the grid keys it too.
        """
        return self._mask_cache.get((tuple(hw), device, dtype), lambda: self._build_masks(hw, device, dtype))

    def _build_masks(self, hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> Masks:
        ws, shift = self.window_plan(hw)
        padded = (padded_size(hw[0], ws), padded_size(hw[1], ws))
        real = hw if self.mask_padding else padded
        unshifted = shifted_window_mask(padded, ws, 0, real, device=device, dtype=dtype)
        if shift == 0:
            return unshifted, unshifted                    # no block of this grid shifts
        return unshifted, shifted_window_mask(padded, ws, shift, real, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, hw: tuple[int, int],
                coord_aug: Optional[tuple[float, float, float, float]] = None
                ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor, tuple[int, int]]:
        """``x [B, H*W, C]`` -> ``(x_down, hw_down, x_out, hw)`` like mmdet's stage.

        ``coord_aug``: this forward's draw of the coordinate augmentation (training only)."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        ws, shift = self.window_plan(hw)
        masks = self.attention_masks(hw, x.device, dtype)
        cmap = None if self.rope_coords == 'index' and coord_aug is None else self.coord_map(hw, coord_aug)
        tables = self.block_tables(x.device, ws, cmap)
        for blk, rope in zip(self.blocks, tables):
            shifted = blk.attn.shift_size > 0
            x = blk(x, hw, masks[1 if shifted else 0], rope, (ws, shift if shifted else 0))
        if self.downsample is None:
            return x, hw, x, hw
        x_down, hw_down = self.downsample(x, hw)
        return x_down, hw_down, x, hw
