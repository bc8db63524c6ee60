"""RoPE-Swin: Swin Transformer with 2D RoPE inside every (shifted) window attention.

Structure, options and state-dict keys follow mmdet's ``SwinTransformer``
(``patch_embed.projection``, ``stages.i.blocks.j.{norm1, attn.w_msa.qkv, attn.w_msa.proj,
norm2, ffn.layers.0.0, ffn.layers.1}``, ``stages.i.downsample.{norm, reduction}``,
``norm{i}`` per output), plus ``stages.i.blocks.j.attn.w_msa.rope_freqs``
``[2, nh, hd // 2]`` for RoPE-Mixed. ``rope='none', use_rpb=True`` is plain Swin.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ropevit.layers.layer_types import ActLayer, NormLayer
from ropevit.layers.patch_embed import PatchEmbed
from ropevit.layers.patch_merging import PatchMerging
from ropevit.layers.rope import RopeType
from ropevit.layers.rope_coords import RopeCoords, check_rope_coords, ref_grid_of, sample_augment
from ropevit.layers.swin_stage import SwinStage
from ropevit.layers.tracing import contiguous
from ropevit.layers.window import WindowRule, check_window_rule

from .checks import (_check_frozen_stages, _check_rate, _check_rope, _check_stage_out_indices, _check_swin_sizes,
                     _resolve_rope_theta)
from .init import init_scratch_weights

#: ``arch`` presets: embed dims of stage 0, blocks per stage, heads per stage.
SWIN_ARCHS: dict[str, dict] = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}

#: Default theta per RoPE variant (the paper's RoPE-Swin configs).
DEFAULT_ROPE_THETA: dict[str, float] = {'mixed': 10.0, 'axial': 50.0, 'none': 0.0}


def resolve_arch(arch: Union[str, dict], *, embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """``(embed_dims, depths, num_heads)`` from a preset name or dict; explicit values win."""
    if isinstance(arch, str):
        if arch not in SWIN_ARCHS:
            raise ValueError(f'arch={arch!r} is not a preset; choose one of {tuple(SWIN_ARCHS)} or pass a dict '
                             f'with embed_dims, depths, num_heads')
        spec = dict(SWIN_ARCHS[arch])
    elif isinstance(arch, dict):
        unknown = set(arch) - {'embed_dims', 'depths', 'num_heads'}
        if unknown:
            raise ValueError(f'arch dict has unknown keys {sorted(unknown)}; allowed: embed_dims, depths, num_heads')
        spec = dict(SWIN_ARCHS['tiny'], **arch)
    else:
        raise ValueError(f'arch must be a preset name {tuple(SWIN_ARCHS)} or a dict, got {type(arch).__name__}')
    if embed_dims is not None:
        spec['embed_dims'] = embed_dims
    if depths is not None:
        spec['depths'] = depths
    if num_heads is not None:
        spec['num_heads'] = num_heads
    dims, dps, heads = int(spec['embed_dims']), tuple(int(d) for d in spec['depths']), \
        tuple(int(h) for h in spec['num_heads'])
    if len(dps) != len(heads) or not dps or min(dps) < 1:
        raise ValueError(f'depths={dps} and num_heads={heads} must be non-empty, of equal length, depths >= 1')
    for i, h in enumerate(heads):
        if h < 1 or (dims * 2 ** i) % h:
            raise ValueError(f'num_heads={heads}: stage {i} has {dims * 2 ** i} channels, not divisible by {h}')
    return dims, dps, heads


class RoPESwin(nn.Module):
    """Swin Transformer backbone with window-local 2D RoPE.

    Args:
        arch: ``'tiny' | 'small' | 'base'`` or a dict with ``embed_dims, depths, num_heads``.
        embed_dims, depths, num_heads: override the preset's values (mmdet config style).
        rope: ``'mixed'`` (learnable per block), ``'axial'`` (fixed) or ``'none'``.
        rope_theta: RoPE theta; default 10 for mixed (init), 50 for axial.
        use_rpb: Swin's relative position bias (default: only when ``rope='none'``).
        mask_padding: mask window padding out of attention, so padding does not change
            results on real tokens. ``False`` reproduces mmdet's Swin exactly (it lets
            padded zeros act as keys).
        in_channels, patch_size: image channels and patch-embedding stride (4).
        window_size: attention window side; may differ from the one the weights were
            trained with (RoPE has no table; an RPB table is resized at load).
        window_rule: what a stage does when its token grid is not larger than a window
            (``min(H, W) <= window_size``), decided per forward from the actual grid:

            * ``'mmdet'`` (default): nothing special; the grid is padded to a window and
              the odd blocks still shift by ``window_size // 2``, as mmdet's / mmseg's
              ``SwinTransformer``. Needed for parity with mmdet-layout checkpoints.
            * ``'original'``: the original Swin's rule (Microsoft's
              ``SwinTransformerBlock``, and naver-ai/rope-vit's RoPE-Swin built on it):
              that stage uses no shift and a window of ``min(H, W)``. This is the
              function the published RoPE-Swin (and Microsoft Swin) ImageNet weights were
              trained with: at 224 the last stage's 7x7 grid is one unshifted window. The
              original fixes it at construction from ``img_size``; applied per forward, it
              equals the original built with ``img_size`` equal to the input. RoPE then
              uses window-local coordinates ``0 .. min(H, W) - 1``; a relative position
              bias table (``use_rpb``) is indexed by the actual offsets (its central
              ``(2 min(H, W) - 1)^2`` entries), where the original would build a smaller
              table and resize a pretrained one.

            Larger grids are treated the same by both rules, so at detection and
            segmentation sizes (e.g. 800x1333, 512x512) they only differ on small inputs.
        rope_coords: RoPE coordinates (:mod:`ropevit.layers.rope_coords`): ``'index'``
            (default; window-local patch indices, the published weights), ``'interpolate'``
            (indices times ``R / W`` of each stage's grid, ``R`` the reference grid of
            ``rope_ref_size``) or ``'normalized'`` (the step of patch centres normalised to
            ``[-1, 1]`` over the stage's whole grid, DINOv3). RoPE-Swin's attention stays
            window-local: a window gets local indices times the step of the whole grid
            (RoPE scores see coordinate differences only, so this equals global coordinates
            restricted to the window). With ``'interpolate'`` / ``'normalized'`` the positions
            in a window therefore shrink as the image grows, where ``'index'`` keeps them.
        rope_ref_size: the reference image size in pixels for ``'interpolate'`` (int or
            ``(h, w)``; default 224, the published weights' size).
        rope_coords_aug: ``dict(shift, jitter, rescale)`` train-time augmentation of
            ``'normalized'`` coordinates (:class:`~ropevit.layers.rope_coords.CoordAugment`),
            drawn once per forward in training mode; never applied in eval mode.
        mlp_ratio, qkv_bias, qk_scale, patch_norm: as in mmdet.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, and the
            maximum stochastic depth (linear over all blocks).
        out_indices: stages whose (``norm{i}``-normed) maps are returned, NCHW, strides
            4, 8, 16, 32.
        frozen_stages: freeze the patch embedding and stages ``< frozen_stages``
            (-1: nothing), with their output norms.
        with_cp: activation checkpointing per block.
        norm_layer, act_layer: factories (``nn.LayerNorm``, ``nn.GELU``).
    """

    def __init__(self, *, arch: Union[str, dict] = 'tiny', embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None, num_heads: Optional[Sequence[int]] = None,
                 rope: RopeType = 'mixed', rope_theta: Optional[float] = None,
                 use_rpb: Optional[bool] = None, mask_padding: bool = True, in_channels: int = 3,
                 patch_size: int = 4, window_size: int = 7, window_rule: WindowRule = 'mmdet',
                 rope_coords: RopeCoords = 'index', rope_ref_size: Optional[Union[int, Sequence[int]]] = None,
                 rope_coords_aug: Optional[dict] = None,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, patch_norm: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1, with_cp: bool = False,
                 norm_layer: NormLayer = nn.LayerNorm, act_layer: ActLayer = nn.GELU) -> None:
        super().__init__()
        dims, depths, heads = resolve_arch(arch, embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        _check_rope(rope, [dims * 2 ** i // h for i, h in enumerate(heads)])
        use_rpb = rope == 'none' if use_rpb is None else use_rpb
        rope_theta = _resolve_rope_theta(rope, rope_theta, DEFAULT_ROPE_THETA)
        _check_swin_sizes(window_size, patch_size)
        check_window_rule(window_rule)
        ref_size, coords_aug = check_rope_coords(rope_coords, rope_ref_size, rope_coords_aug)
        if rope_coords == 'interpolate' and ref_size is None:
            ref_size = (224, 224)
        num_stages = len(depths)
        out_indices = _check_stage_out_indices(out_indices, num_stages)
        _check_frozen_stages(frozen_stages, num_stages)
        for name, p in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                        ('drop_path_rate', drop_path_rate)):
            _check_rate(name, p)

        self.arch_settings = dict(embed_dims=dims, depths=depths, num_heads=heads)
        self.depths = depths
        self.rope_type: RopeType = rope
        self.rope_theta = rope_theta
        self.use_rpb = bool(use_rpb)
        self.window_size = window_size
        self.window_rule = window_rule
        self.rope_coords: RopeCoords = rope_coords
        self.rope_ref_size = ref_size
        self.rope_coords_aug = coords_aug
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.num_features = [dims * 2 ** i for i in range(num_stages)]
        #: number of lr-decay layer ids: patch_embed 0, blocks 1..sum(depths), norms last.
        self.num_layers = sum(depths) + 2

        self.patch_embed = PatchEmbed(in_channels, dims, patch_size, norm_layer=norm_layer if patch_norm else None,
                                      proj_name='projection')
        self.drop_after_pos = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            c = self.num_features[i]
            down = (PatchMerging(c, 2 * c, norm_layer=norm_layer if patch_norm else None)
                    if i < num_stages - 1 else None)
            self.stages.append(SwinStage(
                c, heads[i], depths[i], window_size, rope=rope, rope_theta=self.rope_theta,
                mask_padding=mask_padding, window_rule=window_rule, rope_coords=rope_coords,
                ref_grid=ref_grid_of(ref_size, patch_size * 2 ** i),
                drop_path_rates=dpr[sum(depths[:i]):sum(depths[:i + 1])], downsample=down,
                use_rpb=self.use_rpb, qkv_bias=qkv_bias, qk_scale=qk_scale,
                attn_drop_rate=attn_drop_rate, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
                norm_layer=norm_layer, act_layer=act_layer, with_cp=with_cp))
        for i in out_indices:
            self.add_module(f'norm{i}', norm_layer(self.num_features[i]))
        self.init_scratch_weights()
        self._freeze_stages()

    # ---------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """From-scratch init (the mm subclass overrides this to load ``init_cfg``)."""
        self.init_scratch_weights()

    def init_scratch_weights(self) -> None:
        """From-scratch init as mmdet's Swin (:func:`ropevit.models.init.init_scratch_weights`),
        relative position bias tables trunc-normal(0.02) too."""
        init_scratch_weights(self, (p for n, p in self.named_parameters()
                                    if n.endswith('relative_position_bias_table')))

    def get_layer_id(self, param_name: str) -> int:
        """Layer id for layer-wise lr decay (mmpretrain's Swin convention).

        ``patch_embed.*`` -> 0; block ``j`` of stage ``s`` -> ``sum(depths[:s]) + j + 1``;
        ``stages.s.downsample.*`` -> the id of stage ``s``'s last block; everything else
        (``norm{i}``) -> ``num_layers - 1``. A leading ``backbone.`` is ignored.
        """
        name = param_name[len('backbone.'):] if param_name.startswith('backbone.') else param_name
        parts = name.split('.')
        if parts[0] == 'patch_embed':
            return 0
        if parts[0] == 'stages' and len(parts) > 3:
            s = int(parts[1])
            if parts[2] == 'blocks':
                return sum(self.depths[:s]) + int(parts[3]) + 1
            if parts[2] == 'downsample':
                return sum(self.depths[:s + 1])
        if parts[0].startswith('norm') or parts[0] == 'drop_after_pos':
            return self.num_layers - 1
        raise ValueError(f'get_layer_id: {param_name!r} is not a parameter name of RoPESwin '
                         f'(expected patch_embed.*, stages.<s>.blocks.<j>.*, stages.<s>.downsample.*, norm<i>.*)')

    # ---------------------------------------------------------------- freezing
    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            self.drop_after_pos.eval()   # a frozen stem drops nothing, as in mmdet's / mmseg's Swin
            for p in self.patch_embed.parameters():
                p.requires_grad = False
        for i in range(self.frozen_stages):
            modules = [self.stages[i]] + ([getattr(self, f'norm{i}')] if i in self.out_indices else [])
            for m in modules:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True) -> 'RoPESwin':
        super().train(mode)
        self._freeze_stages()
        return self

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, C_in, H, W]`` (any H, W) -> one ``[B, C_i, ceil(H / 2^(i+2)), ...]`` map per out index."""
        x, hw = self.patch_embed(x)                      # [B, H/4*W/4, C]
        x = self.drop_after_pos(x)
        aug = (sample_augment(self.rope_coords_aug)
               if self.training and self.rope_coords_aug is not None and self.rope_type != 'none' else None)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw, out, out_hw = stage(x, hw, aug)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)     # [B, h*w, C_i]
                outs.append(contiguous(out.view(-1, *out_hw, self.num_features[i]).permute(0, 3, 1, 2)))
        return outs
