"""Layer-wise learning-rate decay (BEiT / ViTDet style) as a function of parameter names.

A backbone exposes ``num_layers`` and ``get_layer_id(name) -> int`` (0 = stem, ``num_layers - 1``
= last). Parameter ``p`` of layer ``i`` gets ``lr = base_lr * decay_rate ** (num_layers - 1 - i)``;
everything outside the backbone (neck, heads) keeps ``base_lr``. Weight decay is switched off for
1-D tensors (norms, biases) and for position parameters (RoPE frequencies, position embeddings, the
class token, relative position bias tables), which should not shrink towards zero.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from torch import nn

NO_DECAY_KEYS: tuple[str, ...] = (
    'rope.freqs', 'rope_freqs', 'pos_embed', 'absolute_pos_embed', 'cls_token',
    'relative_position_bias_table')


def no_weight_decay(name: str, ndim: int, extra_keys: Iterable[str] = ()) -> bool:
    """True for norms/biases (1-D) and position parameters, by name."""
    return ndim <= 1 or any(key in name for key in (*NO_DECAY_KEYS, *extra_keys))


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
        have ``layer_id=None``.
    """
    if not 0.0 < decay_rate <= 1.0:
        raise ValueError(f'decay_rate={decay_rate!r} must be in (0, 1]')
    backbone = _submodule(model, backbone_prefix)
    if not (hasattr(backbone, 'get_layer_id') and hasattr(backbone, 'num_layers')):
        raise ValueError(f'layer-wise lr decay needs a backbone with get_layer_id() and num_layers '
                         f'(RoPEViT, RoPESwin); {type(backbone).__name__} has neither')
    num_layers: int = backbone.num_layers
    groups: dict[tuple[Optional[int], bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith(backbone_prefix):
            layer_id: Optional[int] = backbone.get_layer_id(name[len(backbone_prefix):])
            scale = decay_rate ** (num_layers - 1 - layer_id)
        else:
            layer_id, scale = None, 1.0
        decay = not no_weight_decay(name, param.ndim, extra_no_decay_keys)
        group = groups.setdefault((layer_id, decay), {
            'params': [], 'param_names': [], 'lr': base_lr * scale, 'lr_scale': scale,
            'weight_decay': weight_decay if decay else 0.0, 'layer_id': layer_id})
        group['params'].append(param)
        group['param_names'].append(name)
    return list(groups.values())


def _submodule(model: nn.Module, prefix: str) -> nn.Module:
    path = prefix.rstrip('.')
    return model.get_submodule(path) if path else model
