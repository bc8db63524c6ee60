"""Optimizer-wrapper constructors for RoPE backbones, opt-in by name in a config.

``RoPEOptimWrapperConstructor``: mmengine's ``paramwise_cfg`` with keys that compose, and
position parameters (RoPE frequencies first) never weight-decayed::

    optim_wrapper = dict(
        constructor='RoPEOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}, norm_decay_mult=0.))

``LayerDecayOptimWrapperConstructor``: layer-wise lr decay for RoPEViT / RoPESwin::

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(decay_rate=0.7))   # optional: no_decay_keys=('my_param',)

Its groups come from :func:`ropevit.layer_decay.layer_decay_param_groups`. Both log their groups
at rank 0 (INFO). Importing this module registers the two names and changes nothing else: a
config that names neither builds its optimizer exactly as before.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional, Sequence

from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm, _InstanceNorm
from torch import nn

from ropevit.layer_decay import NO_DECAY_KEYS, is_position_param, layer_decay_param_groups, register_slice_lr_hooks

_LAYER_DECAY_KEYS = ('decay_rate', 'no_decay_keys', 'backbone_prefix')
_TYPE_RULES = ('bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult', 'dwconv_decay_mult', 'flat_decay_mult',
               'dcn_offset_lr_mult')
_ROPE_KEYS = ('custom_keys', 'no_decay_keys', 'bypass_duplicate', *_TYPE_RULES)
_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def resolve_param_options(name: str, *, custom_keys: Mapping[str, Mapping[str, Any]], lr_rule: float = 1.0,
                          decay_rule: float = 1.0, no_decay_keys: Iterable[str] = NO_DECAY_KEYS) -> dict[str, Any]:
    """``{'lr_mult', 'decay_mult', ...}`` of one parameter (the rule of :class:`RoPEOptimWrapperConstructor`).

    Each field is taken from the longest key of ``custom_keys`` that is a substring of ``name``
    AND sets that field (equal lengths: alphabetical, mmengine's order), so ``'rope_freqs'`` or
    ``'norm'`` refine ``'backbone'`` instead of replacing it. ``lr_rule`` / ``decay_rule`` (the
    bias / norm / depth-wise rules of the parameter's kind) multiply the result; a name ending in
    one of ``no_decay_keys`` gets ``decay_mult = 0``. Other fields are passed to the param group,
    as mmengine does.
    """
    options: dict[str, Any] = {}
    for key in sorted(sorted(custom_keys), key=len, reverse=True):
        if key in name:
            for field, value in custom_keys[key].items():
                options.setdefault(field, value)
    options['lr_mult'] = float(options.get('lr_mult', 1.0)) * lr_rule
    options['decay_mult'] = float(options.get('decay_mult', 1.0)) * decay_rule
    if is_position_param(name, no_decay_keys):
        options['decay_mult'] = 0.0
    return options


def _type_rules(module: nn.Module, parent: Optional[nn.Module], prefix: str, name: str, ndim: int,
                rules: Mapping[str, float]) -> tuple[float, float]:
    """mmengine's per-kind multipliers ``(lr, decay)`` in its order of precedence: norms, biases,
    depth-wise convs, other 1-D tensors; DCN offsets."""
    dcn = _is_dcn(parent)
    is_norm = isinstance(module, _NORMS)
    is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
    lr_rule = rules['bias_lr_mult'] if name == 'bias' and not (is_norm or dcn) else 1.0
    if 'conv_offset' in prefix and dcn and isinstance(module, nn.Conv2d):
        lr_rule = rules['dcn_offset_lr_mult']
    if is_norm:
        decay_rule = rules['norm_decay_mult']
    elif name == 'bias' and not dcn:
        decay_rule = rules['bias_decay_mult']
    elif is_dwconv:
        decay_rule = rules['dwconv_decay_mult']
    elif ndim == 1 and not dcn:
        decay_rule = rules['flat_decay_mult']
    else:
        decay_rule = 1.0
    return lr_rule, decay_rule


def _is_dcn(module: Optional[nn.Module]) -> bool:
    try:
        from mmcv.ops import DeformConv2d, ModulatedDeformConv2d
    except ImportError:   # mmcv without compiled ops has no DCN
        return False
    return isinstance(module, (DeformConv2d, ModulatedDeformConv2d))


def name_patterns(names: Iterable[str], limit: int = 6) -> str:
    """``'backbone.stages.*.blocks.*.norm1.weight, ...'``: names with indices folded, in order."""
    patterns = list(dict.fromkeys(re.sub(r'\.\d+(?=\.|$)', '.*', n) for n in names))
    more = f', ... (+{len(patterns) - limit} more)' if len(patterns) > limit else ''
    return ', '.join(patterns[:limit]) + more


def log_param_groups(title: str, groups: list[dict[str, Any]], names: list[list[str]]) -> None:
    """One INFO line per group (lr, weight decay, size, the names it holds), at rank 0 only."""
    if not is_main_process():
        return
    lines = [f'{title}: {len(groups)} param groups']
    for i, (group, group_names) in enumerate(zip(groups, names)):
        numel = sum(p.numel() for p in group['params'])
        wd = group.get('weight_decay')
        wd_text = '(optimizer default)' if wd is None else f'{wd:.4g}'
        extra = f' layer_id={group["layer_id"]}' if group.get('layer_id') is not None else ''
        if group.get('slice_lr_scales') is not None:   # one lr per block slice (RoPEViT's rope.freqs)
            extra += ' slice lr=[' + ', '.join(f'{group["lr"] * v:.4g}' for v in group['slice_lr_scales']) + ']'
        lines.append(f'  [{i}] lr={group["lr"]:.4g} weight_decay={wd_text} tensors={len(group["params"])} '
                     f'numel={numel:,}{extra}: {name_patterns(group_names)}')
    print_log('\n'.join(lines), logger='current')


def _checked_paramwise_cfg(paramwise_cfg: Optional[dict], allowed: Sequence[str], owner: str) -> dict:
    """A copy of ``paramwise_cfg``; a key outside ``allowed`` is an error naming it."""
    paramwise_cfg = dict(paramwise_cfg or {})
    unknown = sorted(set(paramwise_cfg) - set(allowed))
    if unknown:
        raise ValueError(f'{owner}: unknown paramwise_cfg keys {unknown}; allowed: {list(allowed)}')
    return paramwise_cfg


def _build(optimizer_cfg: dict, wrapper_cfg: dict, groups: list[dict[str, Any]]) -> OptimWrapper:
    optimizer_cfg = dict(optimizer_cfg, params=groups)
    optimizer = OPTIMIZERS.build(optimizer_cfg)
    register_slice_lr_hooks(optimizer)
    wrapper_cfg = dict(wrapper_cfg)
    wrapper_cfg.setdefault('type', 'OptimWrapper')
    return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RoPEOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's ``paramwise_cfg``, with keys that compose and position parameters exempt from decay.

    mmengine's ``DefaultOptimWrapperConstructor`` gives a parameter the settings of its longest
    matching ``custom_keys`` entry only, and then ignores ``norm_decay_mult`` & co. So with
    ``{'backbone': dict(lr_mult=0.1), 'rope_freqs': dict(decay_mult=0.)}`` the frequencies train at
    10x the backbone's lr, ``'backbone'`` wins over ``'norm'``, and a config inherited from mmdet's
    or mmseg's Swin (which does not name ``rope_freqs``) weight-decays the RoPE frequencies. Here:

    - every field (``lr_mult``, ``decay_mult``, other group options) comes from the longest key
      that sets it (:func:`resolve_param_options`): keys name *where*, and a longer key refines;
    - ``bias_lr_mult``, ``bias_decay_mult``, ``norm_decay_mult``, ``dwconv_decay_mult``,
      ``flat_decay_mult``, ``dcn_offset_lr_mult`` (mmengine's meaning and precedence) multiply,
      whether or not a key matched;
    - a parameter whose name ends in one of ``no_decay_keys`` (default
      :data:`ropevit.layer_decay.NO_DECAY_KEYS`: RoPE frequencies, position embeddings, the class
      token and registers, relative position bias tables) gets no weight decay and keeps its lr.

    A parameter shared by several modules is added once (``bypass_duplicate`` is accepted and has
    nothing left to do); frozen parameters are left out, as mmengine does. Parameters with equal
    settings share a group; the groups are logged at rank 0.
    Unknown ``paramwise_cfg`` keys are an error.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = _checked_paramwise_cfg(paramwise_cfg, _ROPE_KEYS, 'RoPEOptimWrapperConstructor')
        self.no_decay_keys = tuple(paramwise_cfg.pop('no_decay_keys', NO_DECAY_KEYS))
        self.rules = {k: float(paramwise_cfg.get(k, 1.0)) for k in _TYPE_RULES}
        super().__init__(optim_wrapper_cfg, paramwise_cfg=paramwise_cfg)   # mmengine's checks of the rest
        self.custom_keys: dict[str, dict] = {k: dict(v) for k, v in paramwise_cfg.get('custom_keys', {}).items()}

    def param_groups(self, model: nn.Module) -> tuple[list[dict[str, Any]], list[list[str]]]:
        """``(groups, names per group)`` in the order of ``model.named_modules()``."""
        modules = dict(model.named_modules())
        groups: dict[str, dict[str, Any]] = {}
        names: dict[str, list[str]] = {}
        seen: set[int] = set()
        for prefix, module in modules.items():
            parent = modules.get(prefix.rpartition('.')[0]) if prefix else None
            for pname, param in module.named_parameters(recurse=False):
                if id(param) in seen or not param.requires_grad:   # frozen: left out, as mmengine does
                    continue
                seen.add(id(param))
                full = f'{prefix}.{pname}' if prefix else pname
                lr_rule, decay_rule = _type_rules(module, parent, prefix, pname, param.ndim, self.rules)
                options = resolve_param_options(full, custom_keys=self.custom_keys, lr_rule=lr_rule,
                                                decay_rule=decay_rule, no_decay_keys=self.no_decay_keys)
                group = dict(options, lr=self.base_lr * options['lr_mult'])
                if options['decay_mult'] == 0.0:
                    group['weight_decay'] = 0.0
                elif self.base_wd is not None:
                    group['weight_decay'] = self.base_wd * options['decay_mult']
                elif options['decay_mult'] != 1.0:
                    raise ValueError(f'{full}: decay_mult={options["decay_mult"]} needs the optimizer\'s '
                                     f'weight_decay to be set')
                key = repr(sorted(group.items()))
                groups.setdefault(key, dict(group, params=[]))['params'].append(param)
                names.setdefault(key, []).append(full)
        return list(groups.values()), list(names.values())

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        groups, names = self.param_groups(model)
        log_param_groups('RoPEOptimWrapperConstructor', groups, names)
        return _build(self.optimizer_cfg, self.optim_wrapper_cfg, groups)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay (:func:`ropevit.layer_decay.layer_decay_param_groups`), no decay on
    1-D and position parameters, RoPEViT's shared ``rope.freqs`` stepped per block
    (:func:`ropevit.layer_decay.register_slice_lr_hooks`). Groups are logged at rank 0."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = _checked_paramwise_cfg(paramwise_cfg, _LAYER_DECAY_KEYS,
                                               'LayerDecayOptimWrapperConstructor')
        self.decay_rate = float(paramwise_cfg.get('decay_rate', 1.0))
        self.no_decay_keys = tuple(paramwise_cfg.get('no_decay_keys', ()))
        self.backbone_prefix = paramwise_cfg.get('backbone_prefix', 'backbone.')
        super().__init__(optim_wrapper_cfg, paramwise_cfg=None)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        groups = layer_decay_param_groups(
            model, base_lr=self.base_lr, weight_decay=self.base_wd or 0.0, decay_rate=self.decay_rate,
            backbone_prefix=self.backbone_prefix, extra_no_decay_keys=self.no_decay_keys)
        names = [group.pop('param_names') for group in groups]   # torch gives param_names a meaning of its own
        log_param_groups(f'LayerDecayOptimWrapperConstructor (decay_rate={self.decay_rate})', groups, names)
        return _build(self.optimizer_cfg, self.optim_wrapper_cfg, groups)


__all__ = ['RoPEOptimWrapperConstructor', 'LayerDecayOptimWrapperConstructor', 'resolve_param_options',
           'log_param_groups', 'name_patterns']
