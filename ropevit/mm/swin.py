"""Registers ``RoPESwin`` for mmdet / mmseg configs.

Config-dict translation (``norm_cfg``, ``act_cfg``, mmdet's Swin-only options) and
``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` live here; the module and its
state-dict keys are the core :class:`ropevit.models.swin.RoPESwin`.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Union

from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader

from ropevit.checkpoint.common import load_state_dict_checked
from ropevit.checkpoint.swin import convert_swin_state_dict
from ropevit.models import swin as core


@MODELS.register_module()
class RoPESwin(core.RoPESwin, BaseModule):
    """:class:`ropevit.models.swin.RoPESwin` with mmdet's config interface.

    Takes every keyword of the core class plus, for configs written for mmdet's
    ``SwinTransformer``: ``norm_cfg`` / ``act_cfg`` (built with mmcv),
    ``init_cfg`` / ``pretrained``, ``strides`` (must be ``(patch_size, 2, 2, 2)``),
    ``use_abs_pos_embed`` (must be False), and ``convert_weights`` / ``pretrain_img_size``,
    which are accepted and unused: the checkpoint layout is detected from its keys and
    RoPE-Swin has no absolute position embedding to size.
    """

    def __init__(self, *, init_cfg: Optional[Union[dict, list]] = None, pretrained: Optional[str] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                 strides: Optional[Sequence[int]] = None, use_abs_pos_embed: bool = False,
                 convert_weights: bool = True, pretrain_img_size: Union[int, Sequence[int]] = 224,
                 **kwargs) -> None:
        if init_cfg is not None and pretrained is not None:
            raise ValueError('init_cfg and pretrained cannot both be set; use init_cfg=dict(type="Pretrained", ...)')
        if pretrained is not None:
            warnings.warn('pretrained is deprecated, use init_cfg=dict(type="Pretrained", checkpoint=...)')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if use_abs_pos_embed:
            raise ValueError('use_abs_pos_embed=True is not supported by RoPESwin (positions come from RoPE '
                             'or the relative position bias); allowed: False')
        patch_size = kwargs.get('patch_size', 4)
        if strides is not None and tuple(strides) != (patch_size, 2, 2, 2)[:len(tuple(strides))]:
            raise ValueError(f'strides={tuple(strides)} is not supported; allowed: ({patch_size}, 2, 2, 2) '
                             f'(non-overlapping patch embedding, 2x2 patch merging)')
        if norm_cfg is not None:
            kwargs['norm_layer'] = lambda c, cfg=dict(norm_cfg): build_norm_layer(cfg, c)[1]
        if act_cfg is not None:
            kwargs['act_layer'] = lambda cfg=dict(act_cfg): build_activation_layer(cfg)
        self.convert_weights = convert_weights
        super().__init__(**kwargs)
        self.init_cfg = init_cfg

    def init_weights(self) -> None:
        """From scratch, or from ``init_cfg=dict(type='Pretrained', checkpoint=PATH[, prefix])``
        through :func:`convert_swin_state_dict` (Microsoft / original RoPE-Swin, mmdet / mmseg
        and ropevit layouts), reporting every key that did not fit."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and not cfg.get('checkpoint'):
            # Configs leave the path empty for the user to set; say loudly that nothing was loaded.
            MMLogger.get_current_instance().warning(
                'RoPESwin: init_cfg Pretrained has no checkpoint set, so the backbone is trained FROM SCRATCH. '
                'Set model.backbone.init_cfg.checkpoint=PATH (see README, "Weights") to start from '
                'ImageNet weights.')
            cfg = None
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.init_scratch_weights()   # whatever the checkpoint lacks (e.g. norm<i>) starts as from scratch
            logger = MMLogger.get_current_instance()
            path = cfg['checkpoint']
            ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu', logger=logger)
            if cfg.get('prefix'):
                from ropevit.checkpoint.common import strip_prefix, unwrap_state_dict
                prefix = cfg['prefix'] if cfg['prefix'].endswith('.') else cfg['prefix'] + '.'
                ckpt = strip_prefix(unwrap_state_dict(ckpt), prefix)
            dropped: dict[str, str] = {}
            state_dict = convert_swin_state_dict(ckpt, self, dropped=dropped)
            report = load_state_dict_checked(self, state_dict, source=str(path), dropped=dropped)
            logger.info(f'RoPESwin weights from {path}: {report.summary()}')
            self._is_init = True
        elif cfg is None:
            self.init_scratch_weights()
            self._is_init = True
        else:
            BaseModule.init_weights(self)
