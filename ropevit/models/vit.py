"""RoPE-ViT backbone for dense prediction (plain PyTorch).

DeiT-III "LS" ViT (pre-norm, qkv bias, GELU MLP, LayerScale) with 2D RoPE
(naver-ai/rope-vit; timm's ``vit_*_patch16_rope{,_mixed}{,_ape}_224``), optional
absolute position embedding, and ViTDet-style window attention with a few global blocks.
Any input size: the image is zero-padded to a patch multiple, outputs are
``ceil(H / 16) x ceil(W / 16)`` NCHW maps.

Prefix tokens (class token, ``num_reg_tokens`` registers) are never rotated and never windowed:
beside window blocks every window attends with them and they attend globally. ``preset='dinov3' |
'eva02'`` (:data:`VIT_PRESETS`) gives the options of timm's DINOv3 / EVA-02, whose weights then load.

State-dict keys equal timm's port: ``cls_token``, ``reg_token`` ``[1, R, C]``, ``pos_embed`` ``[1, (S/16)^2, C]``,
``patch_embed.proj``, ``rope.freqs`` ``[2, depth, nh, hd // 2]`` (mixed only),
``blocks.i.{norm1, attn.qkv, attn.proj, gamma_1, norm2, mlp.fc1, mlp.fc2, gamma_2}``,
``norm`` (only with ``final_norm``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.utils.checkpoint as cp
from torch import nn

from ropevit.layers.layer_types import ActLayer, NormLayer
from ropevit.layers.patch_embed import PatchEmbed
from ropevit.layers.pos_embed import resample_pos_embed
from ropevit.layers.rope import RopeType
from ropevit.layers.rope_coords import (CoordMap, RopeCoords, augment_map, check_rope_coords, coord_map, ref_grid_of,
                                        sample_augment)
from ropevit.layers.rope_tables import RopeTables
from ropevit.layers.vit_block import ViTBlock
from ropevit.layers.vit_rope import VisionRoPE
from ropevit.layers.tracing import contiguous
from ropevit.layers.window import window_key_mask

from .checks import (_check_frozen_stages, _check_heads, _check_layer_scale, _check_patch_size, _check_rate,
                     _check_rope, _check_windows, _resolve_block_out_indices, _resolve_rope_theta)
from .init import init_scratch_weights

#: ``arch`` presets (DeiT-III / RoPE-ViT S, B, L; Ti for EVA-02-Ti).
VIT_ARCHS: dict[str, dict] = {
    'tiny': dict(embed_dims=192, num_heads=3, depth=12, mlp_ratio=4.0),
    'small': dict(embed_dims=384, num_heads=6, depth=12, mlp_ratio=4.0),
    'base': dict(embed_dims=768, num_heads=12, depth=12, mlp_ratio=4.0),
    'large': dict(embed_dims=1024, num_heads=16, depth=24, mlp_ratio=4.0),
}

#: Default theta per variant (the paper / timm: axial 100, mixed init 10).
DEFAULT_ROPE_THETA: dict[str, float] = {'axial': 100.0, 'mixed': 10.0, 'none': 0.0}


#: Families (``preset=``): the options that make RoPEViT compute timm's model of that family, whose
#: state dicts then load through :func:`ropevit.checkpoint.vit.convert_vit_state_dict`. Explicit
#: keywords win over a preset's.
VIT_PRESETS: dict[str, dict] = {
    # DeiT-III "LS" RoPE-ViT (naver-ai/rope-vit, timm's vit_*_patch16_rope*): the class defaults.
    'rope-vit': dict(),
    # timm's vit_{small,base,large}_patch16_dinov3[_qkvb]: 4 registers, normalised axial RoPE
    # (base 100), LayerScale, LayerNorm eps 1e-5, no APE (the _qkvb weights: qkv_bias=True).
    'dinov3': dict(patch_size=16, rope='axial', rope_theta=100.0, rope_coords='normalized', use_ape=False,
                   with_cls_token=True, num_reg_tokens=4, qkv_bias=False, layer_scale_init_value=1e-5,
                   final_norm=True, norm_eps=1e-5),
    # timm's eva02_{tiny,small,base,large}_patch14_*: SwiGLU (B, L: with sub-LN; mlp_ratio 8/3), APE, RoPE on
    # the pretraining grid's rescale (theta 1e4), no LayerScale, no final norm (fc_norm pools).
    'eva02': dict(patch_size=14, rope='axial', rope_theta=10000.0, rope_coords='interpolate', use_ape=True,
                  with_cls_token=True, qkv_bias=True, layer_scale_init_value=None, final_norm=False,
                  mlp_layer='swiglu', mlp_norm=True, mlp_ratio=4 * 2 / 3, norm_eps=1e-6),
}


#: Options of a family that depend on the named ``arch``: timm's EVA-02-Ti and -S have no sub-LN in
#: their (packed) SwiGLU MLP, B and L have one.
VIT_PRESET_ARCH_OPTIONS: dict[str, dict[str, dict]] = {
    'eva02': {'tiny': dict(mlp_norm=False), 'small': dict(mlp_norm=False)},
}


def vit_preset_kwargs(preset: str, kwargs: dict) -> dict:
    """``kwargs`` completed with the options of a family of :data:`VIT_PRESETS` (explicit ones win)."""
    if preset not in VIT_PRESETS:
        raise ValueError(f'preset={preset!r} is not a RoPEViT family; choose one of {tuple(VIT_PRESETS)}')
    spec = dict(VIT_PRESETS[preset])
    arch_name = kwargs.get('arch', 'base')
    if isinstance(arch_name, str):
        spec.update(VIT_PRESET_ARCH_OPTIONS.get(preset, {}).get(arch_name, {}))
    eps, mlp_ratio = spec.pop('norm_eps', None), spec.pop('mlp_ratio', None)
    if eps is not None and 'norm_layer' not in kwargs:
        spec['norm_layer'] = lambda c: nn.LayerNorm(c, eps=eps)
    out = {**spec, **kwargs}
    if mlp_ratio is not None:
        arch = resolve_vit_arch(out.get('arch', 'base'))
        if not (isinstance(out.get('arch'), dict) and 'mlp_ratio' in out['arch']):
            arch['mlp_ratio'] = mlp_ratio
        out['arch'] = arch
    return out


def resolve_vit_arch(arch: Union[str, dict]) -> dict:
    """``dict(embed_dims, num_heads, depth, mlp_ratio)`` from a preset name or a dict."""
    if isinstance(arch, str):
        if arch not in VIT_ARCHS:
            raise ValueError(f'arch={arch!r} is not a preset; choose one of {tuple(VIT_ARCHS)} or pass a dict '
                             f'with embed_dims, num_heads, depth[, mlp_ratio]')
        return dict(VIT_ARCHS[arch])
    if not isinstance(arch, dict):
        raise ValueError(f'arch must be one of {tuple(VIT_ARCHS)} or a dict, got {type(arch).__name__}')
    unknown = set(arch) - {'embed_dims', 'num_heads', 'depth', 'mlp_ratio'}
    missing = {'embed_dims', 'num_heads', 'depth'} - set(arch)
    if unknown or missing:
        raise ValueError(f'arch dict: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; '
                         f'allowed: embed_dims, num_heads, depth, mlp_ratio')
    spec = {'mlp_ratio': 4.0, **arch}
    if min(spec['embed_dims'], spec['num_heads'], spec['depth']) < 1 or spec['mlp_ratio'] <= 0:
        raise ValueError(f'arch={arch}: embed_dims, num_heads, depth must be >= 1 and mlp_ratio > 0')
    return spec


class RoPEViT(nn.Module):
    """RoPE-ViT backbone: ``[B, 3, H, W]`` -> one ``[B, C, ceil(H/16), ceil(W/16)]`` map per out index.

    Args:
        arch: ``'small' | 'base' | 'large'`` or ``dict(embed_dims, num_heads, depth[, mlp_ratio])``.
        patch_size: patch size (16 for all published weights).
        in_channels: image channels.
        pretrain_img_size: image size the absolute position embedding was trained at
            (its grid is ``pretrain_img_size // patch_size``).
        rope: ``'axial'`` (fixed frequencies), ``'mixed'`` (learnable) or ``'none'``.
        rope_theta: theta (axial) / init theta (mixed); default 100 (axial), 10 (mixed).
        rope_coords: RoPE coordinates (:mod:`ropevit.layers.rope_coords`): ``'index'`` (default;
            patch indices, the published weights), ``'interpolate'`` (indices times ``R / W``,
            ``R`` the reference grid of ``rope_ref_size``; EVA-02) or ``'normalized'`` (patch
            centres in ``[-1, 1]`` per axis, times ``2 pi``; DINOv3). Window blocks get the
            window-local indices times the whole grid's step (equal scores, see the module).
        rope_ref_size: reference image size in pixels for ``'interpolate'`` (int or
            ``(h, w)``; default ``pretrain_img_size``).
        rope_coords_aug: ``dict(shift, jitter, rescale)``, train-time augmentation of
            ``'normalized'`` coordinates (:class:`~ropevit.layers.rope_coords.CoordAugment`),
            drawn once per forward in training mode; never in eval mode.
        use_ape: add an absolute position embedding, bicubic-resized to the actual grid.
        with_cls_token: prepend a class token (not rotated, no position embedding).
        num_reg_tokens: register tokens after the class token (DINOv3: 4; key ``reg_token``
            ``[1, R, C]``, timm's), prefix tokens like it: never rotated, no position embedding.
        window_size: ViTDet window attention in all blocks except ``global_attn_indexes``;
            0 = every block global. The grid is padded to a window multiple and padding
            tokens are masked out as keys.
        global_attn_indexes: blocks with global attention when ``window_size > 0``.
        out_indices: blocks whose patch tokens are returned (negative = from the end).
        final_norm: apply the final LayerNorm (``norm``) to the last block's output.
        qkv_bias: bias in qkv.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        attn_drop_rate, drop_rate: dropout rates.
        layer_scale_init_value: LayerScale init; None/0 disables LayerScale.
        norm_layer: factory ``C -> module`` (default LayerNorm, eps 1e-6 as DeiT-III/timm).
        act_layer: factory for the MLP activation (default GELU).
        mlp_layer: ``'mlp'`` (DeiT-III / DINOv3) or ``'swiglu'`` (EVA-02); mlp_norm: the
            LayerNorm inside the SwiGLU MLP (EVA-02-B/L's sub-LN).
        with_cp: activation checkpointing per block (``torch.utils.checkpoint``).
        frozen_stages: -1 none; 0 patch embed, class token, position embedding; ``k >= 1``
            also blocks ``0..k-1`` (and their slice of RoPE-Mixed frequencies, whose
            gradients are zeroed); ``k = depth`` also ``norm``.
    """

    def __init__(self, *, arch: Union[str, dict] = 'base', patch_size: int = 16, in_channels: int = 3,
                 pretrain_img_size: int = 224, rope: RopeType = 'mixed', rope_theta: Optional[float] = None,
                 rope_coords: RopeCoords = 'index', rope_ref_size: Optional[Union[int, Sequence[int]]] = None,
                 rope_coords_aug: Optional[dict] = None,
                 use_ape: bool = False, with_cls_token: bool = True, num_reg_tokens: int = 0, window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (), out_indices: Sequence[int] = (-1,),
                 final_norm: bool = True, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_rate: float = 0.0,
                 layer_scale_init_value: Optional[float] = 1e-5, norm_layer: Optional[NormLayer] = None,
                 act_layer: ActLayer = nn.GELU, mlp_layer: str = 'mlp', mlp_norm: bool = False,
                 with_cp: bool = False, frozen_stages: int = -1) -> None:
        super().__init__()
        spec = resolve_vit_arch(arch)
        dims, heads, depth = int(spec['embed_dims']), int(spec['num_heads']), int(spec['depth'])
        _check_heads(dims, heads)
        _check_rope(rope, [dims // heads])
        rope_theta = _resolve_rope_theta(rope, rope_theta, DEFAULT_ROPE_THETA)
        _check_patch_size(patch_size, pretrain_img_size)
        ref_size, coords_aug = check_rope_coords(rope_coords, rope_ref_size, rope_coords_aug)
        if rope_coords == 'interpolate' and ref_size is None:
            ref_size = (pretrain_img_size, pretrain_img_size)
        if num_reg_tokens < 0:
            raise ValueError(f'num_reg_tokens={num_reg_tokens} must be >= 0')
        _check_windows(window_size, global_attn_indexes, with_cls_token, depth)
        outs = _resolve_block_out_indices(out_indices, depth)
        _check_frozen_stages(frozen_stages, depth)
        _check_rate('drop_path_rate', drop_path_rate)
        _check_layer_scale(layer_scale_init_value)
        norm_layer = norm_layer or (lambda c: nn.LayerNorm(c, eps=1e-6))

        self.arch = spec
        self.embed_dims, self.num_heads, self.depth = dims, heads, depth
        self.patch_size = patch_size
        self.pretrain_grid = (pretrain_img_size // patch_size,) * 2
        self.rope_type: RopeType = rope
        self.rope_theta = rope_theta
        self.rope_coords: RopeCoords = rope_coords
        self.rope_ref_size = ref_size
        self.rope_ref_grid = ref_grid_of(ref_size, patch_size)
        self.rope_coords_aug = coords_aug
        self.window_size = window_size
        self.global_attn_indexes = tuple(sorted(set(global_attn_indexes)))
        self.out_indices = outs
        self.final_norm = final_norm
        self.with_cp = with_cp
        self.frozen_stages = frozen_stages
        self.num_reg_tokens = num_reg_tokens
        self.num_prefix_tokens = (1 if with_cls_token else 0) + num_reg_tokens
        #: number of distinct layer ids of :meth:`get_layer_id` (``0 .. depth + 1``).
        self.num_layers = depth + 2

        self.patch_embed = PatchEmbed(in_channels, dims, patch_size, proj_name='proj')
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims)) if with_cls_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, num_reg_tokens, dims)) if num_reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.pretrain_grid), dims)) if use_ape else None
        self.pos_drop = nn.Dropout(drop_rate)
        self.rope = (VisionRoPE(dims // heads, heads, depth, rope_type=rope, theta=rope_theta)
                     if rope != 'none' else None)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            ViTBlock(dims, heads, mlp_ratio=spec['mlp_ratio'], qkv_bias=qkv_bias, drop_path=dpr[i],
                     attn_drop=attn_drop_rate, proj_drop=drop_rate, layer_scale_init_value=layer_scale_init_value,
                     window_size=self._block_window(i), mlp_layer=mlp_layer, mlp_norm=mlp_norm,
                     norm_layer=norm_layer, act_layer=act_layer)
            for i in range(depth)])
        self.norm = norm_layer(dims) if final_norm else None
        self.init_scratch_weights()
        if self.rope is not None and self.rope_type == 'mixed':
            self.rope.freqs.register_hook(self._mask_frozen_freq_grad)   # before freezing may turn grads off
        self._freeze_stages()

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> 'RoPEViT':
        """A model of a family of :data:`VIT_PRESETS` (``'dinov3'``, ``'eva02'``), e.g.
        ``RoPEViT.from_preset('dinov3', arch='base', window_size=14, global_attn_indexes=(2, 5, 8, 11))``."""
        return cls(**vit_preset_kwargs(preset, kwargs))

    def _block_window(self, i: int) -> int:
        return 0 if (self.window_size == 0 or i in self.global_attn_indexes) else self.window_size

    # ---------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """From-scratch init (the mm subclass overrides this to load ``init_cfg``)."""
        self.init_scratch_weights()

    def init_scratch_weights(self) -> None:
        """timm/DeiT-III init (:func:`ropevit.models.init.init_scratch_weights`), class token and
        position embedding trunc-normal(0.02) too."""
        init_scratch_weights(self, (self.cls_token, self.reg_token, self.pos_embed))

    def get_layer_id(self, param_name: str) -> int:
        """Layer id for layer-wise lr decay (BEiT / MAE convention), ``0 .. num_layers - 1``.

        ``patch_embed.*``, ``cls_token``, ``pos_embed`` -> 0; ``blocks.i.*`` -> ``i + 1``;
        ``norm.*`` and ``rope.freqs`` (shared by all blocks) -> ``depth + 1 = num_layers - 1``.
        A leading ``backbone.`` is ignored. The lr scale is then
        ``decay ** (num_layers - 1 - layer_id)``.
        """
        name = param_name[len('backbone.'):] if param_name.startswith('backbone.') else param_name
        head = name.split('.')[0]
        if head in ('patch_embed', 'cls_token', 'reg_token', 'pos_embed'):
            return 0
        if head == 'blocks':
            parts = name.split('.')
            if len(parts) > 2 and parts[1].isdigit() and int(parts[1]) < self.depth:
                return int(parts[1]) + 1
        if head in ('norm', 'rope'):
            return self.num_layers - 1
        raise ValueError(f'get_layer_id: {param_name!r} is not a parameter name of RoPEViT (expected '
                         f'patch_embed.*, cls_token, reg_token, pos_embed, rope.freqs, blocks.<i>.*, norm.*)')

    # ---------------------------------------------------------------- freezing
    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods = [self.patch_embed, self.pos_drop] + list(self.blocks[:self.frozen_stages])
        if self.frozen_stages == self.depth and self.norm is not None:
            mods.append(self.norm)
        return mods

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for p in (self.cls_token, self.reg_token, self.pos_embed):
            if p is not None:
                p.requires_grad = False
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False
        if self.rope_type == 'mixed' and self.frozen_stages == self.depth:
            self.rope.freqs.requires_grad = False

    def _mask_frozen_freq_grad(self, grad: torch.Tensor) -> torch.Tensor:
        # One [2, depth, nh, P] parameter serves all blocks: frozen blocks' slices get no gradient.
        if 0 < self.frozen_stages < self.depth:
            grad = grad.clone()
            grad[:, :self.frozen_stages] = 0
        return grad

    def train(self, mode: bool = True) -> 'RoPEViT':
        super().train(mode)
        self._freeze_stages()
        return self

    # ---------------------------------------------------------------- forward
    def rope_coord_map(self, hw: tuple[int, int]) -> CoordMap:
        """The coordinate map of an ``hw`` grid in this forward (augmented in training mode)."""
        cmap = coord_map(hw, self.rope_coords, self.rope_ref_grid)
        if self.training and self.rope_coords_aug is not None:
            cmap = augment_map(cmap, *sample_augment(self.rope_coords_aug))
        return cmap

    def _rope_tables(self, hw: tuple[int, int], device: torch.device) -> list[Optional[RopeTables]]:
        """One :class:`RopeTables` per block, built once per distinct grid (outside the block loop).

        Global blocks' tables cover the prefix tokens too (identity rows first); window
        blocks' tables have the window-local indices times the grid's coordinate steps. With
        prefix tokens, window blocks get the global tables instead: a prefix token's score with a
        patch token depends on the patch's absolute angle, so the block cuts the windows' rows out
        of the global tables (:func:`~ropevit.layers.rope_tables.window_rope_tables`).
        """
        if self.rope is None:
            return [None] * self.depth
        cmap = self.rope_coord_map(hw)
        cache = not (self.training and self.rope_coords_aug is not None)   # a fresh draw every forward
        per_block: list[Optional[RopeTables]] = [None] * self.depth
        # Grouped by window size (0 = global), not by grid: a dict keyed by the grid would hash
        # the input's sizes, which torch.compile then specialises on (a recompile per input size).
        groups: dict[int, list[int]] = {}
        for i in range(self.depth):
            groups.setdefault(self._block_window(i), []).append(i)
        for ws, ids in groups.items():
            npt = self.num_prefix_tokens
            grid, gmap = ((ws, ws), cmap.local()) if ws and not npt else (hw, cmap)
            for i, tables in zip(ids, self.rope.block_tables(grid, device, ids, num_prefix_tokens=npt, cmap=gmap,
                                                             cache=cache)):
                per_block[i] = tables
        return per_block

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, C_in, H, W]`` (any H, W) -> ``[B, C, ceil(H/p), ceil(W/p)]`` per out index."""
        B = x.shape[0]
        x, hw = self.patch_embed(x)                                     # [B, h*w, C]
        if self.pos_embed is not None:
            x = x + resample_pos_embed(self.pos_embed, self.pretrain_grid, hw)
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if prefix:
            x = torch.cat([*prefix, x], dim=1)                          # [B, npt + h*w, C]
        x = self.pos_drop(x)

        ropes = self._rope_tables(hw, x.device)
        key_mask = window_key_mask(hw, self.window_size, device=x.device) if self.window_size else None
        npt = self.num_prefix_tokens
        outs = []
        for i, blk in enumerate(self.blocks):
            mask = key_mask if blk.window_size else None
            if self.with_cp and torch.is_grad_enabled() and x.requires_grad:
                x = cp.checkpoint(blk, x, hw, ropes[i], num_prefix_tokens=npt, key_mask=mask,
                                  use_reentrant=False)
            else:
                x = blk(x, hw, ropes[i], num_prefix_tokens=npt, key_mask=mask)
            if i == self.depth - 1 and self.norm is not None:
                x = self.norm(x)
            if i in self.out_indices:
                out = contiguous(x[:, npt:]).view(B, *hw, self.embed_dims)   # [B, h, w, C]
                outs.append(contiguous(out.permute(0, 3, 1, 2)))        # [B, C, h, w]
        return outs
