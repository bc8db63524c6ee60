"""``init_cfg=dict(type='Pretrained', ...)`` for RoPEViT and RoPESwin: read, convert, load strictly.

Keys (docs/LOADING_WEIGHTS.md):

* ``checkpoint`` (path or URL mmengine's ``CheckpointLoader`` reads), ``prefix`` (take the
  keys under it, e.g. ``'backbone.'``), ``map_location`` (accepted; loading is on the CPU);
* ``allow_missing``: glob patterns of model keys allowed to stay at their init;
* ``allow_unexpected``: glob patterns of checkpoint keys (in the model's layout, as the
  error names them) allowed to be ignored;
* ``strict`` (default True): False allows every missing and unexpected key;
* ``checkpoint_rope``: ``'auto'`` (default) | ``'axial'`` | ``'none'``: what the checkpoint
  was trained with when its keys cannot tell (no frequencies but an APE / a relative
  position bias); ``'none'`` = a plain ViT / Swin;
* ``axial_rope_theta``: theta of an axial checkpoint that stores no frequencies, used to
  convert it to a RoPE-Mixed model (default: ViT 100, Swin 50).

Whatever is allowed, dropped with a loss or assumed is logged at WARNING level through
MMLogger; the full report (loaded, converted, dropped, new) at INFO.
"""
from __future__ import annotations

import os.path as osp
import warnings
from typing import Any, Callable, Optional, Union

from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from ropevit.checkpoint.common import (CheckpointMismatchError, ConversionLog, LoadReport, check_checkpoint_rope,
                                       load_state_dict_checked, strip_prefix, unwrap_state_dict)
from ropevit.checkpoint.io import load_checkpoint_file

PRETRAINED_KEYS: tuple[str, ...] = ('type', 'checkpoint', 'prefix', 'map_location', 'allow_missing',
                                    'allow_unexpected', 'strict', 'checkpoint_rope', 'axial_rope_theta')


def load_pretrained(module: nn.Module, cfg: dict, *, convert: Callable, expected_new: dict[str, str]) -> LoadReport:
    """Load ``cfg['checkpoint']`` into ``module`` through ``convert`` (a converter of
    :mod:`ropevit.checkpoint`) and :func:`load_state_dict_checked`.

    Raises:
        ValueError: an unknown init_cfg key or a bad value (names it and what is allowed).
        CheckpointMismatchError: the checkpoint does not fit (the message starts with its path).
    """
    unknown = sorted(set(cfg) - set(PRETRAINED_KEYS))
    if unknown:
        raise ValueError(f'init_cfg Pretrained: unknown keys {unknown}; allowed: {PRETRAINED_KEYS}')
    checkpoint_rope = cfg.get('checkpoint_rope', 'auto')
    check_checkpoint_rope(checkpoint_rope)
    strict = cfg.get('strict', True)
    if not isinstance(strict, bool):
        raise ValueError(f'init_cfg strict={strict!r}; allowed: True, False')
    theta = cfg.get('axial_rope_theta')
    if theta is not None and (isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0):
        raise ValueError(f'init_cfg axial_rope_theta={theta!r}; allowed: a number > 0 (or None)')
    logger = MMLogger.get_current_instance()
    path = cfg['checkpoint']
    ckpt = _read(path, logger)
    if cfg.get('prefix'):
        prefix = cfg['prefix'] if cfg['prefix'].endswith('.') else cfg['prefix'] + '.'
        ckpt = strip_prefix(unwrap_state_dict(ckpt), prefix)
    log = ConversionLog()
    try:
        state_dict = convert(ckpt, module, log=log, checkpoint_rope=checkpoint_rope,
                             axial_theta=None if theta is None else float(theta))
        return load_state_dict_checked(module, state_dict, source=str(path), log=log, expected_new=expected_new,
                                       allow_missing=cfg.get('allow_missing'),
                                       allow_unexpected=cfg.get('allow_unexpected'), strict=strict,
                                       logger=logger)
    except CheckpointMismatchError as e:
        if str(path) in str(e):
            raise
        raise CheckpointMismatchError(f'{path}: {e}') from None


def _read(path: str, logger: MMLogger) -> Any:
    """A local file through :func:`ropevit.checkpoint.io.load_checkpoint_file` (``weights_only=True``
    with mmengine's checkpoint types allowed; a refused or broken file says why), whether or not
    :mod:`ropevit.mm.runtime` is on; URLs and other schemes through mmengine's ``CheckpointLoader``."""
    if '://' in str(path):
        return CheckpointLoader.load_checkpoint(path, map_location='cpu', logger=logger)
    return load_checkpoint_file(osp.expanduser(str(path)), map_location='cpu')


def init_backbone_weights(backbone: BaseModule, *, convert: Callable, expected_new: dict[str, str]) -> None:
    """``init_weights`` of the mm backbones (RoPEViT, RoPESwin): from scratch
    (``init_scratch_weights``) when ``init_cfg`` is None, or a ``Pretrained`` one has no checkpoint
    set (with a warning: configs leave the path empty for the user); otherwise loaded by
    :func:`load_pretrained`, whose report is kept as ``backbone.load_report``; any other
    ``init_cfg`` is mmengine's."""
    cfg = backbone.init_cfg
    name = type(backbone).__name__
    if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and not cfg.get('checkpoint'):
        MMLogger.get_current_instance().warning(
            f'{name}: init_cfg Pretrained has no checkpoint set, so the backbone is trained FROM SCRATCH. '
            'Set model.backbone.init_cfg.checkpoint=PATH (see README, "Weights") to start from '
            'ImageNet weights.')
        cfg = None
    if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
        backbone.init_scratch_weights()   # what the checkpoint lacks (e.g. Swin's norm<i>) or an allowed
        #                                   partial load leaves out starts as from scratch
        backbone.load_report = load_pretrained(backbone, cfg, convert=convert, expected_new=expected_new)
        backbone._is_init = True
    elif cfg is None:
        backbone.init_scratch_weights()
        backbone._is_init = True
    else:
        BaseModule.init_weights(backbone)


def translate_mm_keywords(kwargs: dict, *, init_cfg: Optional[Union[dict, list]], pretrained: Optional[str],
                          norm_cfg: Optional[dict], act_cfg: Optional[dict]) -> Optional[Union[dict, list]]:
    """The mm config keywords of a backbone in core terms: ``norm_cfg`` / ``act_cfg`` become the core's
    ``norm_layer`` / ``act_layer`` factories (built with mmcv, in ``kwargs``), the deprecated
    ``pretrained=PATH`` becomes ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``; returns the init_cfg."""
    if init_cfg is not None and pretrained is not None:
        raise ValueError(f'init_cfg={init_cfg!r} and pretrained={pretrained!r} cannot both be set; '
                         'use init_cfg=dict(type="Pretrained", checkpoint=PATH)')
    if pretrained is not None:
        warnings.warn('pretrained is deprecated, use init_cfg=dict(type="Pretrained", checkpoint=...)')
        init_cfg = dict(type='Pretrained', checkpoint=pretrained)
    if norm_cfg is not None:
        kwargs['norm_layer'] = lambda c, cfg=dict(norm_cfg): build_norm_layer(cfg, c)[1]
    if act_cfg is not None:
        kwargs['act_layer'] = lambda cfg=dict(act_cfg): build_activation_layer(cfg)
    return init_cfg
