"""Registers ``RoPEViT`` (backbone) and ``SimpleFPN`` (neck) for mmdet / mmseg configs.

Config-dict translation (``norm_cfg``, ``act_cfg``, mmdet's ``SimpleFPN`` arguments) and
``init_cfg=dict(type='Pretrained', checkpoint=PATH[, prefix=...])`` live here; modules
and state-dict keys are the core :class:`ropevit.models.vit.RoPEViT` and
:class:`ropevit.necks.simple_fpn.SimpleFPN`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from ropevit.necks.simple_fpn import LayerNorm2d  # timm's, export-safe

from ropevit.checkpoint.vit import EXPECTED_NEW_KEYS, convert_vit_state_dict
from ropevit.models import vit as core
from ropevit.necks import simple_fpn as core_fpn

from .pretrained import init_backbone_weights, translate_mm_keywords


def _act_factory(act_cfg: Optional[dict]):
    if act_cfg is None:
        return None
    return lambda cfg=dict(act_cfg): build_activation_layer(cfg)


# ViTDet's heads use a channels-first LayerNorm ('LN2d') that neither mmcv nor mmdet registers
# (mmdet registers it only in its ViTDet project); configs name it in head norm_cfg's.
if MODELS.get('LN2d') is None:
    MODELS.register_module(name='LN2d', module=LayerNorm2d)


@MODELS.register_module()
class RoPEViT(core.RoPEViT, BaseModule):
    """:class:`ropevit.models.vit.RoPEViT` with the mm config interface.

    Takes every keyword of the core class plus ``norm_cfg`` / ``act_cfg`` (built with
    mmcv; default LayerNorm eps 1e-6 and GELU) and ``init_cfg`` / ``pretrained``.
    ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` accepts the original naver
    RoPE-ViT checkpoints, timm's ports, and ropevit / mmengine checkpoints (``backbone.``
    prefix), converted by :func:`ropevit.checkpoint.vit.convert_vit_state_dict`, and timm's
    DINOv3 / EVA-02 weights (``.pth`` or ``.safetensors``) with ``preset='dinov3'`` / ``'eva02'``
    (:data:`ropevit.models.vit.VIT_PRESETS`; explicit keywords win).
    """

    def __init__(self, *, init_cfg: Optional[Union[dict, list]] = None, pretrained: Optional[str] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None, preset: Optional[str] = None,
                 **kwargs) -> None:
        if preset is not None:                      # a family of core.VIT_PRESETS: 'dinov3', 'eva02'
            kwargs = core.vit_preset_kwargs(preset, kwargs)
        init_cfg = translate_mm_keywords(kwargs, init_cfg=init_cfg, pretrained=pretrained, norm_cfg=norm_cfg,
                                         act_cfg=act_cfg)
        super().__init__(**kwargs)
        self.init_cfg = init_cfg

    def init_weights(self) -> None:
        """From scratch, or from ``init_cfg=dict(type='Pretrained', checkpoint=PATH[, prefix,
        allow_missing, allow_unexpected, strict, checkpoint_rope, axial_rope_theta])``
        (:mod:`ropevit.mm.pretrained`, docs/LOADING_WEIGHTS.md): every tensor the checkpoint
        lacks or the model cannot use is an error naming it unless allowed; an axial
        checkpoint into a RoPE-Mixed model gets exactly the axial frequencies. The report is
        kept as ``self.load_report``."""
        init_backbone_weights(self, convert=convert_vit_state_dict, expected_new=EXPECTED_NEW_KEYS)


@MODELS.register_module()
class SimpleFPN(core_fpn.SimpleFPN, BaseModule):
    """:class:`ropevit.necks.simple_fpn.SimpleFPN` with the mm config interface.

    Accepts mmdet ViTDet's ``SimpleFPN`` arguments: ``backbone_channel`` (the backbone's
    ``C``) with ``in_channels=[C // 4, C // 2, C, C]``, or simply ``in_channels=C``;
    ``out_channels``, ``num_outs``, ``norm_cfg`` (default ``dict(type='LN2d', eps=1e-6)``;
    any mmcv norm such as ``BN``/``SyncBN``/``GN`` also works), ``act_cfg`` (activation
    inside the 4x branch, default GELU), ``scale_factors``, ``in_index``, ``init_cfg``.
    """

    def __init__(self, *, in_channels: Union[int, Sequence[int]], out_channels: int = 256,
                 backbone_channel: Optional[int] = None, num_outs: Optional[int] = None,
                 scale_factors: Sequence[float] = core_fpn.ALLOWED_SCALES, in_index: int = -1,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                 conv_cfg: Optional[dict] = None, init_cfg: Optional[Union[dict, list]] = None) -> None:
        if conv_cfg is not None:
            raise ValueError(f'conv_cfg={conv_cfg} is not supported by SimpleFPN; allowed: None')
        if isinstance(in_channels, int):
            channels = in_channels
            if backbone_channel is not None and backbone_channel != in_channels:
                raise ValueError(f'backbone_channel={backbone_channel} differs from in_channels={in_channels}')
        else:
            if backbone_channel is None:
                raise ValueError('in_channels is a list: also give backbone_channel (the backbone map channels), '
                                 'or pass in_channels=<int>')
            mult = {4.0: 0.25, 2.0: 0.5, 1.0: 1.0, 0.5: 1.0}
            expected = [int(backbone_channel * mult[float(s)]) for s in scale_factors]
            if list(in_channels) != expected:
                raise ValueError(f'in_channels={list(in_channels)} does not match backbone_channel='
                                 f'{backbone_channel} and scale_factors={tuple(scale_factors)}; expected {expected}')
            channels = backbone_channel
        norm_cfg = dict(type='LN2d', eps=1e-6) if norm_cfg is None else dict(norm_cfg)
        if norm_cfg['type'] == 'LN2d':
            eps = norm_cfg.get('eps', 1e-6)
            norm_layer = lambda c, eps=eps: LayerNorm2d(c, eps=eps)  # noqa: E731
        else:
            norm_layer = lambda c, cfg=norm_cfg: build_norm_layer(cfg, c)[1]  # noqa: E731
        kwargs = {} if act_cfg is None else {'act_layer': _act_factory(act_cfg)}
        super().__init__(channels, out_channels, scale_factors=scale_factors, num_outs=num_outs,
                         in_index=in_index, norm_layer=norm_layer, **kwargs)
        self.init_cfg = init_cfg

    def init_weights(self) -> None:
        if self.init_cfg is None:
            core_fpn.SimpleFPN.init_weights(self)
            self._is_init = True
        else:
            BaseModule.init_weights(self)
