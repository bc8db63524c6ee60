"""(Shifted) window attention of RoPE-Swin, with mmdet's ``ShiftWindowMSA`` key layout.

``ShiftWindowMSA`` (keys ``attn.*``) pads, rolls and partitions a ``[B, H*W, C]`` map;
``WindowMSA`` (keys ``attn.w_msa.*``) attends inside each window through
``F.scaled_dot_product_attention``, with an additive mask that holds the cyclic-shift
mask, the padding mask and, when ``use_rpb``, Swin's relative position bias.

RoPE positions are window-local ``(x, y)`` in ``[0, ws)``. Because RoPE is relative, a
window gives the same scores as RoPE over absolute image positions restricted to it.

The window a block uses may be smaller than the one it was built with (the original
Swin's rule, :func:`ropevit.layers.window.effective_window`): the caller passes the
effective ``window_size`` / ``shift_size`` per forward and the stage's
:class:`~ropevit.layers.rope_tables.RopeTables` for that window; the bias table (sized for
the built window) is indexed by the actual offsets.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RopeType, apply_rope, init_mixed_frequencies
from .rope_tables import RopeTables
from .tracing import contiguous
from .window import pad_to_multiple, window_partition, window_unpartition


def relative_position_index(window_size: int, *, table_window: Optional[int] = None,
                            device: Optional[torch.device] = None) -> torch.Tensor:
    """``[ws*ws, ws*ws]`` index into a ``[(2T-1)^2, nh]`` bias table (Swin's convention).

    Entry ``(i, j)`` is ``(dy + T - 1) * (2T - 1) + (dx + T - 1)`` with
    ``(dy, dx) = pos_i - pos_j`` and ``T = table_window`` (default ``ws``). A window
    smaller than the table's (``ws < T``) reads the entries of its actual offsets.
    """
    ws = window_size
    t = ws if table_window is None else table_window
    if not 1 <= ws <= t:
        raise ValueError(f'window_size={ws} must be in [1, table_window={t}]')
    ys, xs = torch.meshgrid(torch.arange(ws, device=device), torch.arange(ws, device=device), indexing='ij')
    pos = torch.stack([ys.flatten(), xs.flatten()], -1)          # [N, 2] (row, col)
    rel = pos[:, None, :] - pos[None, :, :] + (t - 1)            # [N, N, 2] in [t-ws, t+ws-2]
    return rel[..., 0] * (2 * t - 1) + rel[..., 1]               # [N, N]


class WindowMSA(nn.Module):
    """Multi-head self-attention inside windows of ``ws * ws`` tokens.

    Args:
        embed_dims: channels ``C``.
        num_heads: heads ``nh`` (``hd = C // nh``).
        window_size: window side ``ws``.
        rope: ``'mixed'`` (learnable ``rope_freqs`` ``[2, nh, hd // 2]``, turned into tables by
            the stage), ``'axial'`` (fixed, tables from the stage) or ``'none'``.
        rope_theta: init theta of the mixed frequencies.
        use_rpb: add Swin's relative position bias (``relative_position_bias_table``).
        qkv_bias: bias of the qkv projection.
        qk_scale: overrides ``hd ** -0.5``.
        attn_drop_rate, proj_drop_rate: dropout on attention weights / output.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, *, rope: RopeType = 'mixed',
                 rope_theta: float = 10.0, use_rpb: bool = False, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.window_size = window_size
        self.head_dim = embed_dims // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.rope_type = rope
        self.use_rpb = use_rpb
        self.attn_drop_rate = attn_drop_rate
        if use_rpb:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size - 1) ** 2, num_heads))                # [(2ws-1)^2, nh]
            self.register_buffer('relative_position_index', relative_position_index(window_size),
                                 persistent=False)                                 # [N, N]
        if rope == 'mixed':
            self.rope_freqs = nn.Parameter(
                init_mixed_frequencies(self.head_dim, num_heads, theta=rope_theta))  # [2, nh, hd//2]
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def relative_position_bias(self, window_size: Optional[int] = None) -> torch.Tensor:
        """``[nh, N, N]`` bias of every query/key pair of a ``window_size`` window.

        ``window_size`` (default: the built one) may be smaller than the built window (the
        original Swin's rule on a small grid); the table is then indexed by the actual
        offsets, ``|dy|, |dx| < window_size``, its central entries. (The original code
        would build a ``(2 window_size - 1)^2`` table for that grid instead and resize a
        pretrained one bicubically; for RoPE-Swin, which has no bias table, the two agree.)
        """
        ws = self.window_size if window_size is None else window_size
        index = self.relative_position_index                                              # [N0, N0]
        if ws != self.window_size:
            w0 = self.window_size
            # The top-left ws x ws positions of the built window have exactly the offsets of
            # a ws window: a view of the cached index, no new table.
            index = index.view(w0, w0, w0, w0)[:ws, :ws, :ws, :ws]                          # [ws, ws, ws, ws]
        n = ws * ws
        bias = self.relative_position_bias_table[index.reshape(-1)]                        # [N*N, nh]
        return bias.view(n, n, -1).permute(2, 0, 1)                                        # [nh, N, N]

    def qkv_rotated(self, x: torch.Tensor, rope: Optional[RopeTables]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [B_, N, C]`` -> ``q, k, v`` ``[B_, nh, N, hd]``, q and k rotated by the window's tables."""
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, self.head_dim)  # [B_, N, 3, nh, hd]
        qkv = qkv.permute(2, 0, 3, 1, 4)                                     # [3, B_, nh, N, hd]
        if self.rope_type == 'none':
            return qkv.unbind(0)                                             # [B_, nh, N, hd] each
        if rope is None:
            raise ValueError(f'rope={self.rope_type!r} attention needs the RoPE tables of its window')
        # q and k in one call: one pass, half the launches.
        q, k = apply_rope(qkv[:2], rope.cos, rope.sin, rope.rot).unbind(0)  # [B_, nh, N, hd] each
        return q, k, qkv[2]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                rope: Optional[RopeTables] = None, *, window_size: Optional[int] = None) -> torch.Tensor:
        """
        Args:
            x: ``[B*nW, N, C]`` windows (``N = ws*ws``), batch-major: window ``w`` of
                image ``b`` is row ``b * nW + w``.
            mask: ``[nW, N, N]`` additive mask (0 attend, large negative masked) or None.
            rope: this block's tables for the window, ``[N, P]`` or ``[nh, N, P]`` (required
                unless ``rope='none'``).
            window_size: the window side ``ws`` of ``x`` (default: the built one).

        Returns:
            ``[B*nW, N, C]``.
        """
        b_, n, c = x.shape
        q, k, v = self.qkv_rotated(x, rope)                     # [B_, nh, N, hd]
        bias = None
        if self.use_rpb:
            bias = self.relative_position_bias(window_size).unsqueeze(0)   # [1, nh, N, N]
        if mask is not None:
            nw = mask.shape[0]
            mask = mask.to(q.dtype)[:, None]                    # [nW, 1, N, N]
            bias = mask if bias is None else bias.to(q.dtype) + mask  # [nW, nh|1, N, N]
            bias = bias.repeat(b_ // nw, 1, 1, 1)                     # [B_, nh|1, N, N] (batch-major tiles)
        elif bias is not None:
            bias = bias.to(q.dtype)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop_rate if self.training else 0.0,
            scale=self.scale)                                   # [B_, nh, N, hd]
        x = x.transpose(1, 2).reshape(b_, n, c)                 # [B_, N, C]
        return self.proj_drop(self.proj(x))


class ShiftWindowMSA(nn.Module):
    """Pads a map to window multiples, rolls it by ``-shift_size``, and runs ``WindowMSA``.

    Args:
        embed_dims, num_heads, window_size: as :class:`WindowMSA`.
        shift_size: cyclic shift (0 for W-MSA, ``ws // 2`` for SW-MSA).
        drop_path: stochastic-depth module applied to the output (mmdet's ``attn.drop``).
        **attn_kwargs: keyword options of :class:`WindowMSA`.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, *, shift_size: int = 0,
                 drop_path: Optional[nn.Module] = None, **attn_kwargs) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size={shift_size} must be in [0, window_size={window_size})')
        self.window_size = window_size
        self.shift_size = shift_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, **attn_kwargs)
        self.drop = drop_path if drop_path is not None else nn.Identity()

    def forward(self, x: torch.Tensor, hw: tuple[int, int], mask: Optional[torch.Tensor] = None,
                rope: Optional[RopeTables] = None, window: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """
        Args:
            x: ``[B, H*W, C]``.
            hw: ``(H, W)``.
            mask: ``[nW, N, N]`` additive mask for this block's window, shift and the
                grid's padding (built once per stage), or None.
            rope: this block's RoPE tables for that window.
            window: the effective ``(window_size, shift_size)`` on this grid (the stage's
                window rule); default: the built ones.

        Returns:
            ``[B, H*W, C]``.
        """
        b, l, c = x.shape
        h, w = hw
        ws, s = (self.window_size, self.shift_size) if window is None else window
        x = x.view(b, h, w, c)
        x, padded_hw = pad_to_multiple(x, ws)                              # [B, Hp, Wp, C]
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
        x = self.w_msa(window_partition(x, ws), mask, rope, window_size=ws)  # [B*nW, N, C]
        x = window_unpartition(x, ws, padded_hw, padded_hw)                # [B, Hp, Wp, C]
        if s:
            x = torch.roll(x, (s, s), (1, 2))
        x = contiguous(x[:, :h, :w]).view(b, h * w, c)                     # [B, H*W, C]
        return self.drop(x)
