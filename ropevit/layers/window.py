"""Window partition, padding and attention masks, as pure tensor functions.

Tensors inside backbones are channels-last ``[B, H, W, C]``. A grid that is not a
multiple of the window is padded at the bottom/right; padded tokens are excluded
from attention by a key mask so that results on real tokens do not depend on the
amount of padding. :func:`effective_window` is the rule that picks a stage's window and
shift for its grid (mmdet's or the original Swin's).
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F

from .tracing import contiguous, is_exporting

#: How a stage picks its window for a grid (see :func:`effective_window`).
WindowRule = Literal['mmdet', 'original']
WINDOW_RULES: tuple[str, ...] = ('mmdet', 'original')


def check_window_rule(window_rule: str) -> None:
    """Raise ``ValueError`` for an unknown window rule."""
    if window_rule not in WINDOW_RULES:
        raise ValueError(f'window_rule={window_rule!r} is not supported; choose one of {WINDOW_RULES} '
                         f"('mmdet': always shift and pad, as mmdet's SwinTransformer; 'original': no shift "
                         f'and a window of min(H, W) in a grid that fits in one window, as Microsoft\'s Swin '
                         f'and naver-ai/rope-vit\'s RoPE-Swin)')


def effective_window(hw: tuple[int, int], window_size: int, shift_size: int,
                     window_rule: WindowRule = 'mmdet') -> tuple[int, int]:
    """``(window, shift)`` a block with ``window_size`` / ``shift_size`` uses on an ``hw`` grid.

    * ``'mmdet'``: always ``(window_size, shift_size)``; a smaller grid is padded up to
      one window and still rolled (mmdet's / mmseg's ``SwinTransformer``).
    * ``'original'``: when ``min(H, W) <= window_size``, ``(min(H, W), 0)``: no shift, and
      a window no larger than the grid's short side. This is the rule of Microsoft's
      Swin (``SwinTransformerBlock.__init__``) and of naver-ai/rope-vit's RoPE-Swin built
      on it, there fixed at construction from ``img_size``; applied here per forward
      from the actual grid, which equals the original built with ``img_size`` equal to
      the input size. Otherwise as ``'mmdet'``.

    Under ``torch.export`` the sizes are symbolic and the rule cannot pick a window per grid
    without making every later size a function of it: an exported ``'original'`` stage uses
    ``(window_size, shift_size)`` and records the condition ``min(H, W) > window_size`` as a
    run-time check of the program (``torch._check``), so a smaller input is refused rather
    than computed differently from eager. (TorchScript tracing bakes the branch taken at the
    example size.)
    """
    h, w = hw
    if window_rule != 'original':
        return window_size, shift_size
    if isinstance(h, torch.SymInt) or isinstance(w, torch.SymInt):
        torch._check(torch.sym_min(h, w) > window_size,
                     lambda: f"window_rule='original' exported for grids larger than the window "
                             f'({window_size}); this input has a smaller stage grid')
        return window_size, shift_size
    short = min(int(h), int(w))
    if short <= window_size:
        return short, 0
    return window_size, shift_size


def padded_size(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``: one formula for every caller, so that
    symbolic sizes (``torch.export``) of the padded grid, its windows and masks agree. Positive
    operands only: ONNX's integer division truncates, Python's floors."""
    return (n + multiple - 1) // multiple * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``[B, H, W, C]`` at the bottom/right to multiples of ``multiple``.

    Returns:
        ``([B, Hp, Wp, C], (Hp, Wp))``. Under an exporter the pad is always applied (by
        amounts computed from the input's shape, maybe zero), never skipped by a branch.
    """
    _, h, w, _ = x.shape
    hp, wp = padded_size(h, multiple), padded_size(w, multiple)
    if is_exporting() or hp != h or wp != w:
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    return x, (hp, wp)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``[B, Hp, Wp, C]`` -> ``[B * nW, ws * ws, C]`` (windows in row-major order)."""
    b, hp, wp, c = x.shape
    ws = window_size
    x = x.view(b, hp // ws, ws, wp // ws, ws, c)                    # [B, nWh, ws, nWw, ws, C]
    nw = (hp // ws) * (wp // ws)
    return contiguous(x.permute(0, 1, 3, 2, 4, 5)).view(b * nw, ws * ws, c)  # [B*nW, ws*ws, C]


def window_unpartition(windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`, cropping the padding: -> ``[B, H, W, C]``."""
    hp, wp = padded_hw
    h, w = hw
    ws = window_size
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // ws) * (wp // ws))
    x = windows.view(b, hp // ws, wp // ws, ws, ws, c)              # [B, nWh, nWw, ws, ws, C]
    x = contiguous(x.permute(0, 1, 3, 2, 4, 5)).view(b, hp, wp, c)  # [B, Hp, Wp, C]
    if is_exporting():
        return contiguous(x[:, :h, :w])                             # a crop of maybe zero, no branch
    return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x


def _shift_regions(hp: int, wp: int, ws: int, shift: int, device: Optional[torch.device]) -> torch.Tensor:
    """``[Hp, Wp]`` float region labels of Swin's shift mask, from comparisons (no slice
    assignment, no branch): a row is in band 0 (``< Hp - ws``), 1 (``< Hp - shift``) or 2,
    and so is a column; the label is ``3 * row_band + col_band``. With ``shift = 0`` band 2
    is empty and band 1 is the last row (column) of windows, so all labels inside a window
    agree and the mask is the no-shift one.
    """
    def bands(n: int) -> torch.Tensor:
        r = torch.arange(n, device=device)                                      # [n]
        return (r >= n - ws).float() + (r >= n - shift).float()                 # [n] in {0, 1, 2}
    return bands(hp)[:, None] * 3 + bands(wp)[None, :]                          # [Hp, Wp]


def valid_token_map(hw: tuple[int, int], padded_hw: tuple[int, int], *,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """``[Hp, Wp]`` bool map, True on real tokens, False on padding (two comparisons, so
    sizes may be symbolic)."""
    h, w = hw
    hp, wp = padded_hw
    rows = torch.arange(hp, device=device) < h                    # [Hp]
    cols = torch.arange(wp, device=device) < w                    # [Wp]
    return rows[:, None] & cols[None, :]                          # [Hp, Wp]


def window_key_mask(hw: tuple[int, int], window_size: int, *,
                    device: Optional[torch.device] = None) -> Optional[torch.Tensor]:
    """Key-padding mask per window, or None when the grid needs no padding.

    Returns:
        ``[nW, 1, 1, ws*ws]`` bool (True = attend), broadcastable to SDPA's
        ``[B*nW, nh, ws*ws, ws*ws]`` after repeating over the batch.
    """
    h, w = hw
    ws = window_size
    hp, wp = padded_size(h, ws), padded_size(w, ws)
    if not is_exporting() and (hp, wp) == (h, w):
        return None                                  # (an exported graph always masks: no branch on the size)
    valid = valid_token_map(hw, (hp, wp), device=device)[None, :, :, None]  # [1, Hp, Wp, 1]
    valid = window_partition(valid, ws)[..., 0]                             # [nW, ws*ws]
    return valid[:, None, None, :]                                          # [nW, 1, 1, ws*ws]


def shifted_window_mask(padded_hw: tuple[int, int], window_size: int, shift_size: int,
                        hw: Optional[tuple[int, int]] = None, *,
                        device: Optional[torch.device] = None,
                        dtype: torch.dtype = torch.float32) -> Optional[torch.Tensor]:
    """Additive attention mask for Swin's (shifted) windows, with padding masked.

    The grid of real size ``hw`` is padded to ``padded_hw``, then rolled by
    ``-shift_size``. A query may attend a key only if both came from the same region
    before the roll (the cyclic-shift mask) and the key is a real token. Pass
    ``hw=padded_hw`` (or leave it None) to mask only the shift, as mmdet's Swin does.

    Returns:
        ``[nW, ws*ws, ws*ws]`` with 0 (attend) / -inf-like (masked), or None when
        nothing is masked.
    """
    hp, wp = padded_hw
    ws = window_size
    hw = hw or padded_hw
    if not is_exporting() and shift_size == 0 and tuple(hw) == (hp, wp):
        return None
    if is_exporting():
        region = _shift_regions(hp, wp, ws, shift_size, device)                  # [Hp, Wp]
    else:
        region = torch.zeros(hp, wp, device=device)
        if shift_size > 0:
            bounds = (slice(0, -ws), slice(-ws, -shift_size), slice(-shift_size, None))
            label = 0
            for hs in bounds:
                for wsl in bounds:
                    region[hs, wsl] = label
                    label += 1
    valid = valid_token_map(tuple(hw), (hp, wp), device=device)
    if shift_size > 0:
        # The region labels above are already in the rolled frame (as in Swin), so only
        # the validity map, defined on the un-rolled grid, is rolled.
        valid = torch.roll(valid, (-shift_size, -shift_size), (0, 1))
    region = window_partition(region[None, :, :, None], ws)[..., 0]              # [nW, ws*ws]
    valid = window_partition(valid[None, :, :, None], ws)[..., 0]                # [nW, ws*ws]
    allowed = (region[:, :, None] == region[:, None, :]) & valid[:, None, :]    # [nW, N, N]
    mask = torch.zeros(allowed.shape, device=device, dtype=dtype)
    # Half of the dtype minimum: large enough to zero a softmax weight, small enough
    # that adding a score cannot overflow to -inf (a fully masked padding row stays finite).
    return mask.masked_fill(~allowed, torch.finfo(dtype).min / 2)
