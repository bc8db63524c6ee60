"""The one RoPE contract between backbones and attention: :class:`RopeTables`, how they are
built from frequencies and coordinates, and how they are cached.

Both backbones work the same way: once per forward and grid (outside the block loop) they
turn frequencies into ``RopeTables`` and hand each block the table of its own attention
grid, a global ``H x W`` grid (ViT) or a ``ws x ws`` window (ViTDet windows, Swin).

* Fixed (axial) frequencies are rebuilt from ``(head_dim, theta)`` on the tables' device,
  never read from a buffer, so a ``.half()`` model still gets float32 tables and a
  checkpoint never carries them; their tables depend on the grid only and are cached.
* Learnable (mixed) frequencies are parameters; their tables are rebuilt every forward
  (so gradients reach them), for all blocks of a group in one call, from cached
  coordinates.

:class:`TableCache` holds the caching rules in one place: nothing is cached while
a tracer (compile, export) runs, and tables made under ``torch.inference_mode`` are kept apart.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, NamedTuple, Optional, TypeVar

import torch

from .rope import axial_frequencies, grid_coords, rope_cos_sin, rope_rotation
from .rope_coords import CoordMap
from .tracing import is_tracing

T = TypeVar('T')


class RopeTables(NamedTuple):
    """Rotation tables for the ``L`` tokens one attention call sees (float32).

    ``cos``/``sin``: ``[L, P]`` (shared by the heads: axial) or ``[nh, L, P]`` (mixed);
    ``P = hd // 2``. The first ``num_prefix_tokens`` rows are the identity (``cos = 1``,
    ``sin = 0``), so prefix tokens (a class token) are rotated with the patch tokens and
    come out unchanged. ``rot``: their complex ``cos + i sin`` (``rope_rotation``), made
    once per table so attention does not rebuild it per block; None while
    ``torch.compile``, ``torch.export`` or ``torch.jit.trace`` traces (they rotate with ``cos``/``sin``).

    Stacked tables of several blocks (``[D, nh, L, P]``) are split by :meth:`unstack`.
    """
    cos: torch.Tensor
    sin: torch.Tensor
    rot: Optional[torch.Tensor] = None
    num_prefix_tokens: int = 0

    def unstack(self) -> list['RopeTables']:
        """Tables ``[D, ...]`` of ``D`` blocks -> one :class:`RopeTables` per block."""
        return [RopeTables(self.cos[i], self.sin[i], None if self.rot is None else self.rot[i],
                           self.num_prefix_tokens) for i in range(self.cos.shape[0])]


def token_coords(hw: tuple[int, int], *, num_prefix_tokens: int = 0, device: Optional[torch.device] = None,
                 cmap: Optional[CoordMap] = None) -> torch.Tensor:
    """``[npt + H*W, 2]`` float32 ``(x, y)`` of the tokens of an ``H x W`` grid (row-major).

    ``cmap`` (:mod:`ropevit.layers.rope_coords`) maps the patch indices affinely (None or the
    identity: the indices themselves). The ``npt`` prefix tokens sit at ``(0, 0)`` whatever the
    map: angle 0, so their rotation is exactly the identity.
    """
    grid = grid_coords(*hw, device=device)                                    # [H*W, 2]
    if cmap is not None and not cmap.is_identity:
        grid = torch.stack([grid[:, 0] * cmap.ax + cmap.bx, grid[:, 1] * cmap.ay + cmap.by], -1)
    if num_prefix_tokens:
        grid = torch.cat([grid.new_zeros(num_prefix_tokens, 2), grid])        # [npt + H*W, 2]
    return grid


def window_rope_tables(tables: RopeTables, hw: tuple[int, int], window_size: int, batch: int) -> RopeTables:
    """Cut a grid's tables into the windows of ``window_partition`` (prefix rows kept in each).

    Args:
        tables: ``[npt + H*W, P]`` or ``[nh, npt + H*W, P]`` of the whole grid.
        hw: ``(H, W)``; window_size: ``ws``; batch: ``B``.

    Returns:
        tables ``[B*nW, 1 or nh, npt + ws*ws, P]`` in ``window_partition``'s (batch-major) order;
        rows of padding tokens are zero (their keys are masked, their outputs dropped).
    """
    from .window import pad_to_multiple, window_partition
    npt = tables.num_prefix_tokens
    H, W = hw

    def cut(t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *t.shape[-2:])                                      # [h, npt + H*W, P]
        h, P = t.shape[0], t.shape[-1]
        grid, _ = pad_to_multiple(t[:, npt:].reshape(h, H, W, P), window_size)   # [h, Hp, Wp, P]
        win = window_partition(grid, window_size)                             # [h*nW, ws*ws, P]
        win = win.reshape(h, -1, *win.shape[1:]).transpose(0, 1)              # [nW, h, ws*ws, P]
        pre = t[:, :npt].unsqueeze(0).expand(win.shape[0], -1, -1, -1)        # [nW, h, npt, P]
        out = torch.cat([pre, win], 2)                                        # [nW, h, npt + ws*ws, P]
        return out.repeat(batch, 1, 1, 1)                                     # [B*nW, h, L, P]

    return RopeTables(cut(tables.cos), cut(tables.sin), None, npt)


def build_rope_tables(freqs: torch.Tensor, coords: torch.Tensor, *, num_prefix_tokens: int = 0) -> RopeTables:
    """``RopeTables`` of frequencies ``[2, ..., P]`` at coordinates ``[L, 2]`` (tables ``[..., L, P]``)."""
    cos, sin = rope_cos_sin(freqs, coords)                                   # [..., L, P] each
    return RopeTables(cos, sin, None if is_tracing() else rope_rotation(cos, sin), num_prefix_tokens)


def axial_tables(head_dim: int, theta: float, hw: tuple[int, int], device: torch.device, *,
                 num_prefix_tokens: int = 0, cmap: Optional[CoordMap] = None) -> RopeTables:
    """Fixed RoPE-Axial tables ``[npt + H*W, P]``, frequencies rebuilt from ``(head_dim, theta)``."""
    freqs = axial_frequencies(head_dim, theta, device=device)                # [2, P]
    coords = token_coords(hw, num_prefix_tokens=num_prefix_tokens, device=device, cmap=cmap)
    with torch.no_grad():
        return build_rope_tables(freqs, coords, num_prefix_tokens=num_prefix_tokens)


class TableCache:
    """A small LRU cache of per-grid tensors (RoPE tables, coordinates, attention masks).

    ``get(key, build)`` returns the entry for ``key`` or builds and keeps it, dropping the
    least recently used one past ``size``. Two rules hold for every cache of the backbones:

    * While ``torch.compile``, ``torch.export`` or ``torch.jit.trace`` traces, nothing is
      cached: ``build()`` is traced (constants Inductor folds, or size-dependent ops of the
      exported graph; a cached tensor would bake one input size into it). A cache filled by the first compiled call would fail Dynamo's
      guards on the next one and recompile the backbone; asking for the inference mode
      would break the graph.
    * Tensors made under ``torch.inference_mode`` cannot be saved for backward later, so
      the inference mode is part of every key.

    The key must hold everything the entry depends on (grid, device, dtype, ...).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f'TableCache: size={size} must be >= 1')
        self.size = size
        self._entries: OrderedDict[tuple, object] = OrderedDict()

    def get(self, key: tuple[Hashable, ...], build: Callable[[], T]) -> T:
        if is_tracing():
            return build()
        key = key + (torch.is_inference_mode_enabled(),)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]  # type: ignore[return-value]
        value = self._entries[key] = build()
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def keys(self) -> list[tuple]:
        """The keys held, least recently used first (the last element is the inference mode)."""
        return list(self._entries)

    def values(self) -> list:
        """The entries held, least recently used first."""
        return list(self._entries.values())

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
