"""Layer-wise learning-rate decay (BEiT / ViTDet style) as a function of parameter names.

A backbone exposes ``num_layers`` and ``get_layer_id(name) -> int`` (0 = stem, ``num_layers - 1``
= last). Parameter ``p`` of layer ``i`` gets ``lr = base_lr * decay_rate ** (num_layers - 1 - i)``;
everything outside the backbone (neck, heads) keeps ``base_lr``. Weight decay is switched off for
1-D tensors (norms, biases) and for position parameters (RoPE frequencies, position embeddings, the
class token, relative position bias tables), which should not shrink towards zero.

RoPE frequencies belong to the block that uses them. In RoPESwin each block owns its
``rope_freqs``, so ``get_layer_id`` already places them. RoPEViT keeps the frequencies of all
blocks in one tensor ``rope.freqs`` ``[2, depth, nh, hd // 2]`` (timm's layout): slice ``i`` along
dim 1 belongs to block ``i``. A torch optimizer has one lr per tensor, so that tensor's group runs
at the lr of its latest block and :func:`register_slice_lr_hooks` scales each slice's step by
``decay_rate ** (last block - block)``. The update of SGD, Adam and AdamW (weight decay included)
is proportional to the lr and their state does not depend on it, so this is exactly the step a
separate tensor per block with its own lr would take.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import nn

#: Position parameters and prefix-token embeddings (class token, DINOv3's registers): never
#: weight-decayed. Matched against the END of a parameter's dotted name (``backbone.rope.freqs``,
#: ``...w_msa.rope_freqs``), so ``query_pos_embed`` is not one.
NO_DECAY_KEYS: tuple[str, ...] = (
    'rope.freqs', 'rope_freqs', 'pos_embed', 'absolute_pos_embed', 'cls_token', 'reg_token',
    'relative_position_bias_table')

#: Parameters that hold one slice per block: ``{name in the backbone: (block dim, block name)}``;
#: slice ``i`` takes the layer id of the block ``block name.format(i)``.
BLOCK_SLICED_PARAMS: dict[str, tuple[int, str]] = {'rope.freqs': (1, 'blocks.{}')}


def is_position_param(name: str, keys: Iterable[str] = NO_DECAY_KEYS) -> bool:
    """True if ``name`` is one of ``keys`` or ends with ``'.' + key``."""
    return any(name == key or name.endswith('.' + key) for key in keys)


def no_weight_decay(name: str, ndim: int, extra_keys: Iterable[str] = ()) -> bool:
    """True for norms/biases (1-D), position parameters (:data:`NO_DECAY_KEYS`, by name suffix)
    and names containing one of ``extra_keys``."""
    return ndim <= 1 or is_position_param(name) or any(key in name for key in extra_keys)


def slice_layer_ids(backbone: nn.Module, name: str, param: torch.Tensor) -> Optional[tuple[int, list[int]]]:
    """``(dim, [layer id of slice i])`` for a parameter of :data:`BLOCK_SLICED_PARAMS`, else None.

    ``name`` is relative to the backbone. The slice count must be the size of ``dim``.
    """
    if name not in BLOCK_SLICED_PARAMS:
        return None
    dim, block = BLOCK_SLICED_PARAMS[name]
    if param.ndim <= dim:
        raise ValueError(f'{name} has shape {tuple(param.shape)}; expected one slice per block along dim {dim}')
    return dim, [backbone.get_layer_id(block.format(i) + '.' + name) for i in range(param.shape[dim])]


def layer_decay_param_groups(model: nn.Module, *, base_lr: float, weight_decay: float,
                             decay_rate: float, backbone_prefix: str = 'backbone.',
                             extra_no_decay_keys: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Parameter groups keyed by (layer id, decay flag).

    Args:
        model: the whole detector/segmentor (or a backbone, with ``backbone_prefix=''``).
        base_lr, weight_decay: the optimizer's values for the last backbone layer and the heads.
        decay_rate: lr ratio between consecutive layers (1.0 = no decay).
        backbone_prefix: where the backbone's parameters live in ``model``.

    Returns:
        ``[{'params', 'lr', 'weight_decay', 'lr_scale', 'layer_id', 'param_names'}]``; the heads
        have ``layer_id=None``. A block-sliced parameter (RoPEViT's ``rope.freqs``) gets a group
        of its own at its latest block's layer id, with ``slice_dim`` and ``slice_lr_scales``
        (per slice, relative to the group's lr) for :func:`register_slice_lr_hooks`.
    """
    if not 0.0 < decay_rate <= 1.0:
        raise ValueError(f'decay_rate={decay_rate!r} must be in (0, 1]')
    backbone = _submodule(model, backbone_prefix)
    if not (hasattr(backbone, 'get_layer_id') and hasattr(backbone, 'num_layers')):
        raise ValueError(f'layer-wise lr decay needs a backbone with get_layer_id() and num_layers '
                         f'(RoPEViT, RoPESwin); {type(backbone).__name__} has neither')
    num_layers: int = backbone.num_layers

    def scale_of(layer: int) -> float:
        return decay_rate ** (num_layers - 1 - layer)

    groups: dict[tuple[Any, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = not no_weight_decay(name, param.ndim, extra_no_decay_keys)
        sliced = slice_layer_ids(backbone, name[len(backbone_prefix):], param) \
            if name.startswith(backbone_prefix) else None
        if sliced is not None:
            dim, ids = sliced
            layer_id, scale = max(ids), scale_of(max(ids))
            groups[(name, decay)] = {
                'params': [param], 'param_names': [name], 'lr': base_lr * scale, 'lr_scale': scale,
                'weight_decay': weight_decay if decay else 0.0, 'layer_id': layer_id,
                'slice_dim': dim, 'slice_lr_scales': [scale_of(i) / scale for i in ids]}
            continue
        if name.startswith(backbone_prefix):
            layer_id: Optional[int] = backbone.get_layer_id(name[len(backbone_prefix):])
            scale = scale_of(layer_id)
        else:
            layer_id, scale = None, 1.0
        group = groups.setdefault((layer_id, decay), {
            'params': [], 'param_names': [], 'lr': base_lr * scale, 'lr_scale': scale,
            'weight_decay': weight_decay if decay else 0.0, 'layer_id': layer_id})
        group['params'].append(param)
        group['param_names'].append(name)
    return list(groups.values())


def register_slice_lr_hooks(optimizer: torch.optim.Optimizer) -> list[Any]:
    """Scale each slice's step of the groups that carry ``slice_lr_scales`` (see the module doc).

    A step pre-hook keeps a copy of those tensors; the post-hook sets
    ``p = before + scale[i] * (p - before)`` along ``slice_dim``. The hooks read the scales from
    the param group at every step, so a loaded optimizer state brings its own. Returns the hook
    handles.
    """
    sliced = [g for g in optimizer.param_groups if g.get('slice_lr_scales') is not None]
    if not sliced:
        return []
    saved: list[torch.Tensor] = []

    def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        saved.clear()
        saved.extend(g['params'][0].detach().clone() for g in sliced)

    @torch.no_grad()
    def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group, old in zip(sliced, saved):
            (param,) = group['params']
            shape = [1] * param.ndim
            shape[group['slice_dim']] = -1
            scales = torch.tensor(group['slice_lr_scales'], dtype=param.dtype, device=param.device)
            param.sub_(old).mul_(scales.view(shape)).add_(old)      # [.., D, ..] step per block
        saved.clear()

    for group in sliced:
        if len(group['params']) != 1 or group['params'][0].shape[group['slice_dim']] != len(group['slice_lr_scales']):
            raise ValueError('a param group with slice_lr_scales must hold one tensor with one slice per scale')
    return [optimizer.register_step_pre_hook(before), optimizer.register_step_post_hook(after)]


def _submodule(model: nn.Module, prefix: str) -> nn.Module:
    path = prefix.rstrip('.')
    return model.get_submodule(path) if path else model
