"""Which coordinates a RoPE grid's tokens get: the extrapolation strategies, as pure functions.

Every rule maps the patch index ``i`` of an axis (``0 .. W-1``) affinely, ``x = a * i + b``, with
``(a, b)`` a function of the grid's size. :class:`CoordMap` holds ``(a_x, b_x, a_y, b_y)``.

* ``'index'``: ``x = i`` (``a = 1, b = 0``); the naver RoPE-ViT / RoPE-Swin weights and timm's
  ports of them use this. At a larger test grid the positions grow past the training ones.
* ``'interpolate'``: ``x = i * R / W`` for a reference grid ``R`` (EVA-02's pretraining-grid
  rescale, timm's ``ref_feat_shape``): at the reference grid this is ``'index'``, at other
  grids the coordinates span the reference grid's range.
* ``'normalized'``: patch centres in ``[-1, 1]`` per axis, ``u = 2 (i + 0.5) / W - 1``
  (DINOv3's ``normalize_coords='separate'``), times ``2 pi``: ``x = 2 pi u``. With the
  factor, ``x * m_k`` with the magnitudes ``m_k = 1 / theta ** (4k / hd)`` is DINOv3's angle
  ``2 pi u / period_k`` (``period_k = base ** (4k / hd)``), so theta plays the role of its
  ``base``. Training may augment ``u`` (:class:`CoordAugment`); never at test time.

Why affine maps suffice for windows: a RoPE score depends on ``x_i - x_j`` only, so a window's
scores are those of the grid's coordinates when the window gets the local indices ``0 .. ws-1``
times the grid's ``a`` (the offset ``b`` cancels). Only tokens without a position (prefix tokens,
which the tables leave unrotated) see ``b``: ViTDet window blocks with prefix tokens therefore cut
their windows out of the whole grid's tables (``rope_tables.window_rope_tables``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Optional, Sequence, Union

import torch

RopeCoords = Literal['index', 'interpolate', 'normalized']
ROPE_COORDS: tuple[str, ...] = ('index', 'interpolate', 'normalized')


class CoordMap(NamedTuple):
    """``x = ax * column + bx``, ``y = ay * row + by`` (float, or SymFloat under export)."""
    ax: float = 1.0
    bx: float = 0.0
    ay: float = 1.0
    by: float = 0.0

    @property
    def is_identity(self) -> bool:
        return (self.ax, self.bx, self.ay, self.by) == (1.0, 0.0, 1.0, 0.0)

    def local(self) -> 'CoordMap':
        """The same steps without offsets: what a window needs (scores see differences only)."""
        return CoordMap(self.ax, 0.0, self.ay, 0.0)


@dataclass(frozen=True)
class CoordAugment:
    """Train-time augmentation of ``'normalized'`` coordinates, DINOv3's three knobs.

    Per forward, on the normalised ``u``: ``u <- (u + s) * j * r`` with a shift ``s`` per axis
    drawn from ``U(-shift, shift)``, a jitter factor ``j`` per axis with ``log j`` from
    ``U(-log jitter, log jitter)`` and one rescale factor ``r`` for both axes with ``log r`` from
    ``U(-log rescale, log rescale)``. ``shift=0`` / ``jitter=1`` / ``rescale=1`` turn a knob off.
    """
    shift: float = 0.0
    jitter: float = 1.0
    rescale: float = 1.0

    def __post_init__(self) -> None:
        if not self.shift >= 0:
            raise ValueError(f'rope_coords_aug: shift={self.shift} must be >= 0 (0 = off)')
        for name in ('jitter', 'rescale'):
            if not getattr(self, name) >= 1:
                raise ValueError(f'rope_coords_aug: {name}={getattr(self, name)} must be >= 1 (a max factor; 1 = off)')

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.jitter > 1 or self.rescale > 1


def check_rope_coords(rope_coords: str, ref_size: Optional[Union[int, Sequence[int]]] = None,
                      aug: Optional[Union[dict, CoordAugment]] = None) -> tuple[Optional[tuple[int, int]],
                                                                                 Optional[CoordAugment]]:
    """Validate the coordinate options; returns ``(ref_size (h, w) or None, augment or None)``."""
    if rope_coords not in ROPE_COORDS:
        raise ValueError(f'rope_coords={rope_coords!r} is not supported; choose one of {ROPE_COORDS} '
                         f"('index': patch indices, the published weights; 'interpolate': rescaled to a "
                         f"reference grid, EVA-02; 'normalized': patch centres in [-1, 1], DINOv3)")
    ref = None
    if ref_size is not None:
        ref = (ref_size, ref_size) if isinstance(ref_size, (int, float)) else tuple(ref_size)
        if len(ref) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in ref):
            raise ValueError(f'rope_ref_size={ref_size!r} must be a positive size in pixels, int or (h, w)')
        ref = (int(ref[0]), int(ref[1]))
    if aug is None:
        return ref, None
    if isinstance(aug, dict):
        unknown = set(aug) - {'shift', 'jitter', 'rescale'}
        if unknown:
            raise ValueError(f'rope_coords_aug has unknown keys {sorted(unknown)}; allowed: shift, jitter, rescale')
        aug = CoordAugment(**aug)
    if not isinstance(aug, CoordAugment):
        raise ValueError(f'rope_coords_aug must be a dict(shift, jitter, rescale), got {type(aug).__name__}')
    if aug.active and rope_coords != 'normalized':
        raise ValueError(f"rope_coords_aug={aug} needs rope_coords='normalized' (the augmentation acts on "
                         f'normalised coordinates), got rope_coords={rope_coords!r}')
    return ref, aug if aug.active else None


def coord_map(hw: tuple[int, int], rope_coords: RopeCoords = 'index',
              ref_grid: Optional[tuple[float, float]] = None) -> CoordMap:
    """The :class:`CoordMap` of an ``H x W`` grid under a coordinate rule.

    Args:
        hw: the grid's ``(H, W)`` in tokens.
        rope_coords: ``'index' | 'interpolate' | 'normalized'``.
        ref_grid: ``(H_ref, W_ref)`` in tokens (may be fractional), needed by ``'interpolate'``.
    """
    h, w = hw
    if rope_coords == 'index':
        return CoordMap()
    if rope_coords == 'interpolate':
        if ref_grid is None:
            raise ValueError("rope_coords='interpolate' needs a reference grid (rope_ref_size)")
        return CoordMap(ref_grid[1] / w, 0.0, ref_grid[0] / h, 0.0)
    if rope_coords == 'normalized':
        # 2 pi * (2 (i + 0.5) / W - 1) = (4 pi / W) i + 2 pi (1 / W - 1)
        return CoordMap(4 * math.pi / w, 2 * math.pi * (1 / w - 1), 4 * math.pi / h, 2 * math.pi * (1 / h - 1))
    raise ValueError(f'rope_coords={rope_coords!r}; allowed: {ROPE_COORDS}')


def sample_augment(aug: CoordAugment, *, generator: Optional[torch.Generator] = None
                   ) -> tuple[float, float, float, float]:
    """One draw ``(shift_x, shift_y, factor_x, factor_y)`` of :class:`CoordAugment` (``factor = j * r``)."""
    u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()   # U[0, 1)
    shift_x, shift_y = ((2 * u[0] - 1) * aug.shift, (2 * u[1] - 1) * aug.shift)
    lj, lr = math.log(aug.jitter), math.log(aug.rescale)
    jx, jy = math.exp((2 * u[2] - 1) * lj), math.exp((2 * u[3] - 1) * lj)
    r = math.exp((2 * u[4] - 1) * lr)
    return shift_x, shift_y, jx * r, jy * r


def augment_map(cmap: CoordMap, shift_x: float, shift_y: float, factor_x: float, factor_y: float) -> CoordMap:
    """Compose a ``'normalized'`` map with ``u <- (u + shift) * factor`` per axis (``x = 2 pi u``)."""
    two_pi = 2 * math.pi
    return CoordMap(cmap.ax * factor_x, (cmap.bx + two_pi * shift_x) * factor_x,
                    cmap.ay * factor_y, (cmap.by + two_pi * shift_y) * factor_y)


def ref_grid_of(ref_size: Optional[tuple[int, int]], stride: int) -> Optional[tuple[float, float]]:
    """A reference size in pixels as a grid of tokens of ``stride`` pixels (fractional if need be)."""
    return None if ref_size is None else (ref_size[0] / stride, ref_size[1] / stride)
