"""``LayerDecayOptimWrapperConstructor``: layer-wise lr decay for RoPEViT / RoPESwin.

Config::

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(decay_rate=0.7))   # optional: no_decay_keys=('my_param',)

The groups come from :func:`ropevit.layer_decay.layer_decay_param_groups`.
"""
from __future__ import annotations

from typing import Optional

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from ropevit.layer_decay import layer_decay_param_groups

_ALLOWED_KEYS = ('decay_rate', 'no_decay_keys', 'backbone_prefix')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(_ALLOWED_KEYS))
        if unknown:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: unknown paramwise_cfg keys {unknown}; '
                             f'allowed: {list(_ALLOWED_KEYS)}')
        self.decay_rate = float(paramwise_cfg.get('decay_rate', 1.0))
        self.no_decay_keys = tuple(paramwise_cfg.get('no_decay_keys', ()))
        self.backbone_prefix = paramwise_cfg.get('backbone_prefix', 'backbone.')
        super().__init__(optim_wrapper_cfg, paramwise_cfg=None)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        optimizer_cfg = self.optimizer_cfg.copy()
        groups = layer_decay_param_groups(
            model, base_lr=self.base_lr, weight_decay=self.base_wd or 0.0, decay_rate=self.decay_rate,
            backbone_prefix=self.backbone_prefix, extra_no_decay_keys=self.no_decay_keys)
        for group in groups:  # torch optimizers keep extra keys; names are for logs/tests only
            group.pop('param_names')
        optimizer_cfg['params'] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
