"""Swin building blocks with mmdet's state-dict key names: patch embedding, patch
merging, the MLP (``ffn.layers.*``), the block, and a stage that builds the shift/padding
masks and the window RoPE inputs once per forward for all its blocks."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath
from torch import nn

from .rope import RopeType, axial_frequencies, grid_coords, is_compiling, rope_cos_sin, rope_rotation
from .swin_attention import ShiftWindowMSA, WindowRope
from .window import WindowRule, check_window_rule, effective_window, shifted_window_mask

NormLayer = Callable[[int], nn.Module]
#: Grids whose masks a stage keeps. One: a fixed-size loop (sliding-window inference, a
#: benchmark, video) hits it; a stage-0 mask of Swin-T at 800x1333 is ~13 MB, so keeping
#: every size of multi-scale training would cost hundreds of MB.
MASK_CACHE_SIZE = 1
ActLayer = Callable[[], nn.Module]


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv; the image is zero-padded at the bottom/right
    to a patch multiple first (mmdet's ``padding='corner'``).

    ``[B, 3, H, W]`` -> ``([B, Hp*Wp, C], (Hp, Wp))`` with ``Hp = ceil(H / patch_size)``.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, *,
                 norm_layer: Optional[NormLayer] = nn.LayerNorm) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dims) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.projection(x)                              # [B, C, Hp, Wp]
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)                    # [B, Hp*Wp, C]
        if self.norm is not None:
            x = self.norm(x)
        return x, hw


class PatchMerging(nn.Module):
    """2x2 patch merging: ``[B, H*W, C]`` -> ``[B, ceil(H/2)*ceil(W/2), 2C]``.

    Odd sides are zero-padded at the bottom/right. The 4C vector of a 2x2 group is
    channel-major, ``index = c * 4 + 2 * dy + dx`` (mmdet's ``nn.Unfold`` order; Microsoft's
    Swin uses position-major ``[(0,0), (1,0), (0,1), (1,1)] x C``, see the converter).
    """

    def __init__(self, in_channels: int, out_channels: int, *,
                 norm_layer: Optional[NormLayer] = nn.LayerNorm) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm = norm_layer(4 * in_channels) if norm_layer is not None else None
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))                         # [B, H2*2, W2*2, C]
        h2, w2 = x.shape[1] // 2, x.shape[2] // 2
        x = x.view(b, h2, 2, w2, 2, c).permute(0, 1, 3, 5, 2, 4)          # [B, H2, W2, C, dy, dx]
        x = x.reshape(b, h2 * w2, 4 * c)                                  # [B, H2*W2, 4C]
        if self.norm is not None:
            x = self.norm(x)
        return self.reduction(x), (h2, w2)


class FFN(nn.Module):
    """Two-layer MLP with mmdet's ``FFN`` keys (``layers.0.0`` fc1, ``layers.1`` fc2)."""

    def __init__(self, embed_dims: int, hidden_dims: int, *, act_layer: ActLayer = nn.GELU,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden_dims), act_layer(), nn.Dropout(drop_rate)),
            nn.Linear(hidden_dims, embed_dims),
            nn.Dropout(drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SwinBlock(nn.Module):
    """Pre-norm (S)W-MSA + MLP block. Keys: ``norm1, attn.w_msa.*, norm2, ffn.layers.*``.

    Args:
        embed_dims, num_heads, window_size: attention sizes.
        shift: SW-MSA with ``shift_size = window_size // 2``.
        mlp_ratio: MLP hidden size over ``embed_dims``.
        drop_rate, drop_path_rate: dropout / stochastic depth.
        norm_layer, act_layer: factories for the norms and the MLP activation.
        with_cp: activation checkpointing when the input requires grad.
        **attn_kwargs: :class:`~ropevit.layers.swin_attention.WindowMSA` options.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, *, shift: bool = False,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_layer: NormLayer = nn.LayerNorm, act_layer: ActLayer = nn.GELU,
                 with_cp: bool = False, **attn_kwargs) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = norm_layer(embed_dims)
        self.attn = ShiftWindowMSA(
            embed_dims, num_heads, window_size, shift_size=window_size // 2 if shift else 0,
            drop_path=DropPath(drop_path_rate) if drop_path_rate > 0 else None,
            proj_drop_rate=drop_rate, **attn_kwargs)
        self.norm2 = norm_layer(embed_dims)
        self.ffn = FFN(embed_dims, int(embed_dims * mlp_ratio), act_layer=act_layer, drop_rate=drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def _forward(self, x: torch.Tensor, hw: tuple[int, int], mask: Optional[torch.Tensor],
                 rope: Optional[WindowRope], window: Optional[tuple[int, int]]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw, mask, rope, window)
        return x + self.drop_path(self.ffn(self.norm2(x)))

    def forward(self, x: torch.Tensor, hw: tuple[int, int], mask: Optional[torch.Tensor] = None,
                rope: Optional[WindowRope] = None, window: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """``x [B, H*W, C]`` -> ``[B, H*W, C]``; ``window``: effective ``(window_size,
        shift_size)`` on this grid (default: the built ones)."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw, mask, rope, window, use_reentrant=False)
        return self._forward(x, hw, mask, rope, window)


class SwinStage(nn.Module):
    """``depth`` blocks alternating W-MSA / SW-MSA, then an optional ``downsample``.

    The stage picks, once per forward, the effective window and shift for its grid
    (``window_rule``, :func:`~ropevit.layers.window.effective_window`), and builds the
    additive masks (one for the unshifted and one for the shifted blocks) and the
    ``(cos, sin)`` tables of all its blocks for that window; for axial RoPE the table is
    also cached across forwards (it only depends on the effective window and device).

    Args:
        embed_dims, num_heads, depth, window_size: stage sizes.
        rope: ``'mixed' | 'axial' | 'none'``; rope_theta: its theta.
        mask_padding: mask padded tokens out of attention (False reproduces mmdet's
            Swin, where padded zeros take part as keys).
        window_rule: ``'mmdet'`` (always ``window_size``, shifted blocks always shift) or
            ``'original'`` (Microsoft's Swin: a grid with ``min(H, W) <= window_size``
            gets window ``min(H, W)`` and no shift).
        drop_path_rates: one stochastic-depth rate per block.
        downsample: patch merging after the blocks, or None.
        **block_kwargs: :class:`SwinBlock` options.
    """

    def __init__(self, embed_dims: int, num_heads: int, depth: int, window_size: int, *,
                 rope: RopeType = 'mixed', rope_theta: float = 10.0, mask_padding: bool = True,
                 window_rule: WindowRule = 'mmdet', drop_path_rates: Optional[Sequence[float]] = None,
                 downsample: Optional[PatchMerging] = None, **block_kwargs) -> None:
        super().__init__()
        check_window_rule(window_rule)
        self.window_size = window_size
        self.rope = rope
        self.mask_padding = mask_padding
        self.window_rule = window_rule
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.ModuleList([
            SwinBlock(embed_dims, num_heads, window_size, shift=i % 2 == 1, drop_path_rate=rates[i],
                      rope=rope, rope_theta=rope_theta, **block_kwargs)
            for i in range(depth)])
        self.downsample = downsample
        if rope == 'axial':
            # Fixed frequencies: rebuilt from the hyper-parameters, never saved.
            self.register_buffer('axial_freqs', axial_frequencies(embed_dims // num_heads, rope_theta),
                                 persistent=False)                     # [2, hd//2]
        self._rope_cache: Optional[tuple[tuple, WindowRope]] = None
        self._mask_cache: OrderedDict[tuple, tuple[Optional[torch.Tensor], Optional[torch.Tensor]]] = OrderedDict()

    def window_plan(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Effective ``(window_size, shift_size of the shifted blocks)`` on an ``hw`` grid."""
        return effective_window(hw, self.window_size, self.window_size // 2, self.window_rule)

    def window_rope(self, device: torch.device, window_size: Optional[int] = None) -> Optional[WindowRope]:
        """Window-local coordinates ``0 .. ws-1`` (and the axial table) of a ``window_size``
        window (default: the built one)."""
        if self.rope == 'none':
            return None
        ws = self.window_size if window_size is None else window_size
        if is_compiling():
            # Traced as constants (Inductor folds them); the Python cache below would
            # break the graph (``is_inference_mode_enabled``, ``data_ptr``) and, inside
            # the stage loop, make Dynamo fall back to eager for the whole backbone.
            return self._build_window_rope(device, ws)
        # Tensors made under inference_mode cannot be saved for backward later: keyed apart.
        key = (ws, device, torch.is_inference_mode_enabled(),
               None if self.rope != 'axial' else self.axial_freqs.data_ptr())
        if self._rope_cache is not None and self._rope_cache[0] == key:
            return self._rope_cache[1]
        table = self._build_window_rope(device, ws)
        self._rope_cache = (key, table)
        return table

    def _build_window_rope(self, device: torch.device, window_size: int) -> WindowRope:
        coords = grid_coords(window_size, window_size, device=device)            # [ws*ws, 2]
        if self.rope == 'axial':
            cos, sin = rope_cos_sin(self.axial_freqs, coords)                     # [ws*ws, P]
            return WindowRope(coords, cos, sin, None if is_compiling() else rope_rotation(cos, sin))
        return WindowRope(coords)

    def attention_masks(self, hw: tuple[int, int], device: torch.device, dtype: torch.dtype
                        ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``[nW, N, N]`` additive masks (or None) for unshifted and shifted blocks.

        The last grid's masks are cached (:data:`MASK_CACHE_SIZE`): building them takes
        ~20 small kernels per stage, which a launch-bound GPU at batch 1 would pay on every
        forward. Not cached while ``torch.compile`` traces (Inductor folds them).
        """
        if is_compiling():
            return self._build_masks(hw, device, dtype)
        # Tensors made under inference_mode cannot be saved for backward later: keyed apart.
        # The effective window is a function of the grid (and the fixed window rule), so the
        # grid keys it too.
        key = (tuple(hw), device, dtype, torch.is_inference_mode_enabled())
        masks = self._mask_cache.get(key)
        if masks is None:
            masks = self._mask_cache[key] = self._build_masks(hw, device, dtype)
            if len(self._mask_cache) > MASK_CACHE_SIZE:
                self._mask_cache.popitem(last=False)
        else:
            self._mask_cache.move_to_end(key)
        return masks

    def _build_masks(self, hw: tuple[int, int], device: torch.device, dtype: torch.dtype
                     ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        ws, shift = self.window_plan(hw)
        padded = (-(-hw[0] // ws) * ws, -(-hw[1] // ws) * ws)
        real = hw if self.mask_padding else padded
        unshifted = shifted_window_mask(padded, ws, 0, real, device=device, dtype=dtype)
        if shift == 0:
            return unshifted, unshifted                    # no block of this grid shifts
        return unshifted, shifted_window_mask(padded, ws, shift, real, device=device, dtype=dtype)

    def block_ropes(self, device: torch.device, window_size: Optional[int] = None) -> list[Optional[WindowRope]]:
        """One :class:`WindowRope` with its ``(cos, sin)`` per block, for one forward, for a
        ``window_size`` window (default: the built one).

        Axial: the stage's cached table, shared. Mixed: the blocks' learnable frequencies
        stacked, so one ``rope_cos_sin`` call per stage and forward builds every block's
        ``[nh, ws*ws, P]`` table (gradients flow back to each block's ``rope_freqs``), and
        one ``rope_rotation`` call their complex form.
        """
        rope = self.window_rope(device, window_size)
        if rope is None or self.rope == 'axial':
            return [rope] * len(self.blocks)
        freqs = torch.stack([blk.attn.w_msa.rope_freqs for blk in self.blocks], 1)  # [2, D, nh, P]
        cos, sin = rope_cos_sin(freqs, rope.coords)                                 # [D, nh, N, P] each
        rot = None if is_compiling() else rope_rotation(cos, sin)                   # [D, nh, N, P] complex
        return [WindowRope(rope.coords, cos[i], sin[i], None if rot is None else rot[i])
                for i in range(len(self.blocks))]

    def forward(self, x: torch.Tensor, hw: tuple[int, int]
                ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor, tuple[int, int]]:
        """``x [B, H*W, C]`` -> ``(x_down, hw_down, x_out, hw)`` like mmdet's stage."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        ws, shift = self.window_plan(hw)
        masks = self.attention_masks(hw, x.device, dtype)
        ropes = self.block_ropes(x.device, ws)
        for blk, rope in zip(self.blocks, ropes):
            s = shift if blk.attn.shift_size > 0 else 0
            x = blk(x, hw, masks[s > 0], rope, (ws, s))
        if self.downsample is None:
            return x, hw, x, hw
        x_down, hw_down = self.downsample(x, hw)
        return x_down, hw_down, x, hw
