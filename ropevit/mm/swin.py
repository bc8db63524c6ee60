"""Registers ``RoPESwin`` for mmdet / mmseg configs.

Config-dict translation (``norm_cfg``, ``act_cfg``, mmdet's Swin-only options) and
``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` live here; the module and its
state-dict keys are the core :class:`ropevit.models.swin.RoPESwin`.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from mmengine.model import BaseModule
from mmengine.registry import MODELS

from ropevit.checkpoint.swin import EXPECTED_NEW_KEYS, convert_swin_state_dict
from ropevit.models import swin as core

from .pretrained import init_backbone_weights, translate_mm_keywords


def check_mm_swin_keywords(*, init_cfg: Any, pretrained: Any, norm_cfg: Any, act_cfg: Any, strides: Any,
                           use_abs_pos_embed: Any, convert_weights: Any, pretrain_img_size: Any,
                           patch_size: int, num_stages: int) -> None:
    """The checks of mmdet's / mmseg's ``SwinTransformer.__init__`` on the keywords that only exist
    for their configs, each a ``TypeError`` / ``ValueError`` that names the value and what is
    allowed (theirs are asserts, or nothing). The core class checks the shared keywords."""
    if pretrained is not None and not isinstance(pretrained, str):
        raise TypeError(f'pretrained={pretrained!r} must be a checkpoint path (str) or None; '
                        f'prefer init_cfg=dict(type="Pretrained", checkpoint=PATH)')
    if init_cfg is not None and pretrained is not None:
        raise ValueError(f'init_cfg={init_cfg!r} and pretrained={pretrained!r} cannot both be set; '
                         f'use init_cfg=dict(type="Pretrained", checkpoint=...) only')
    if not (init_cfg is None or isinstance(init_cfg, dict)
            or (isinstance(init_cfg, list) and all(isinstance(c, dict) for c in init_cfg))):
        raise TypeError(f'init_cfg={init_cfg!r} must be None, a dict or a list of dicts')
    size = (pretrain_img_size,) if isinstance(pretrain_img_size, int) else pretrain_img_size
    if not (isinstance(size, (tuple, list)) and len(size) in (1, 2)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ValueError(f'pretrain_img_size={pretrain_img_size!r} must be a positive int or a tuple of 1 or 2 '
                         f'positive ints (RoPESwin does not use it: it has no absolute position embedding)')
    if not isinstance(use_abs_pos_embed, bool) or use_abs_pos_embed:
        raise ValueError(f'use_abs_pos_embed={use_abs_pos_embed!r} is not supported by RoPESwin (positions come '
                         f'from RoPE or the relative position bias); allowed: False')
    if not isinstance(convert_weights, bool):
        raise TypeError(f'convert_weights={convert_weights!r} must be a bool (RoPESwin detects the checkpoint '
                        f'layout from its keys, so either value works)')
    if strides is not None:
        given = tuple(strides) if isinstance(strides, (tuple, list)) else strides
        allowed = (patch_size,) + (2,) * (num_stages - 1)
        if not (isinstance(given, tuple) and len(given) >= num_stages and given[0] == patch_size
                and all(s == 2 for s in given[1:])):
            raise ValueError(f'strides={given!r} is not supported; allowed: {allowed} (the first equal to '
                             f'patch_size={patch_size}: non-overlapping patch embedding; then 2x2 patch merging; '
                             f'one per stage)')
    for name, cfg in (('norm_cfg', norm_cfg), ('act_cfg', act_cfg)):
        if cfg is not None and not (isinstance(cfg, dict) and 'type' in cfg):
            raise TypeError(f'{name}={cfg!r} must be None or a dict with a "type" key, e.g. dict(type="LN")')


@MODELS.register_module()
class RoPESwin(core.RoPESwin, BaseModule):
    """:class:`ropevit.models.swin.RoPESwin` with mmdet's config interface.

    Takes every keyword of the core class plus, for configs written for mmdet's
    ``SwinTransformer``: ``norm_cfg`` / ``act_cfg`` (built with mmcv),
    ``init_cfg`` / ``pretrained``, ``strides`` (must be ``(patch_size, 2, 2, 2)``),
    ``use_abs_pos_embed`` (must be False), and ``convert_weights`` / ``pretrain_img_size``,
    which are accepted and unused: the checkpoint layout is detected from its keys and
    RoPE-Swin has no absolute position embedding to size. Every one of them is checked as
    mmdet's ``SwinTransformer`` checks it (:func:`check_mm_swin_keywords`), with an error that
    names the value (``tests/models/test_swin_mm_suites.py`` runs mmdet's and mmseg's cases).
    """

    def __init__(self, *, init_cfg: Optional[Union[dict, list]] = None, pretrained: Optional[str] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                 strides: Optional[Sequence[int]] = None, use_abs_pos_embed: bool = False,
                 convert_weights: bool = True, pretrain_img_size: Union[int, Sequence[int]] = 224,
                 **kwargs) -> None:
        num_stages = len(core.resolve_arch(kwargs.get('arch', 'tiny'), embed_dims=kwargs.get('embed_dims'),
                                           depths=kwargs.get('depths'), num_heads=kwargs.get('num_heads'))[1])
        check_mm_swin_keywords(init_cfg=init_cfg, pretrained=pretrained, norm_cfg=norm_cfg, act_cfg=act_cfg,
                               strides=strides, use_abs_pos_embed=use_abs_pos_embed,
                               convert_weights=convert_weights, pretrain_img_size=pretrain_img_size,
                               patch_size=kwargs.get('patch_size', 4), num_stages=num_stages)
        init_cfg = translate_mm_keywords(kwargs, init_cfg=init_cfg, pretrained=pretrained, norm_cfg=norm_cfg,
                                         act_cfg=act_cfg)
        self.convert_weights = convert_weights
        super().__init__(**kwargs)
        self.init_cfg = init_cfg

    def init_weights(self) -> None:
        """From scratch, or from ``init_cfg=dict(type='Pretrained', checkpoint=PATH[, prefix,
        allow_missing, allow_unexpected, strict, checkpoint_rope, axial_rope_theta])``
        through :func:`convert_swin_state_dict` (Microsoft / original RoPE-Swin, mmdet / mmseg
        and ropevit layouts) and :mod:`ropevit.mm.pretrained` (docs/LOADING_WEIGHTS.md): every
        tensor the checkpoint lacks (beyond the output norms ``norm<i>``) or the model cannot
        use is an error naming it unless allowed; an axial checkpoint into a RoPE-Mixed model
        gets exactly the axial frequencies. The report is kept as ``self.load_report``."""
        init_backbone_weights(self, convert=convert_swin_state_dict, expected_new=EXPECTED_NEW_KEYS)
