"""Option checks of the backbones' constructors (shared ones first): small pure functions that raise a
``ValueError`` naming the option, the value given and what is allowed."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from ropevit.layers.rope import check_rope_args


def _check_rope(rope: str, head_dims: Sequence[int]) -> None:
    """A known RoPE variant that can split every attention's head dim into x and y pairs."""
    for head_dim in head_dims:
        check_rope_args(rope, head_dim)


def _resolve_rope_theta(rope: str, rope_theta: Optional[float], defaults: Mapping[str, float]) -> float:
    """``rope_theta``, or the variant's default when None; must be > 0 when RoPE is on."""
    if rope_theta is None:
        return float(defaults[rope])
    if rope != 'none' and not rope_theta > 0:
        raise ValueError(f'rope_theta={rope_theta} must be > 0')
    return float(rope_theta)


def _check_rate(name: str, value: float) -> None:
    """A dropout / stochastic-depth probability in ``[0, 1)``."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f'{name}={value} must be in [0, 1)')


def _check_frozen_stages(frozen_stages: int, num_stages: int) -> None:
    """``-1`` (nothing frozen) .. ``num_stages`` (everything)."""
    if not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, {num_stages}]')


# ------------------------------------------------------------------ RoPEViT
def _check_heads(embed_dims: int, num_heads: int) -> None:
    if embed_dims % num_heads:
        raise ValueError(f'embed_dims={embed_dims} is not divisible by num_heads={num_heads}')


def _check_layer_scale(layer_scale_init_value: Optional[float]) -> None:
    if layer_scale_init_value is not None and layer_scale_init_value < 0:
        raise ValueError(f'layer_scale_init_value={layer_scale_init_value} must be >= 0 (or None)')


def _check_patch_size(patch_size: int, pretrain_img_size: int) -> None:
    if patch_size < 1 or pretrain_img_size < patch_size:
        raise ValueError(f'patch_size={patch_size} must be >= 1 and pretrain_img_size={pretrain_img_size} '
                         f'>= patch_size')


def _check_windows(window_size: int, global_attn_indexes: Sequence[int], with_cls_token: bool, depth: int) -> None:
    """ViTDet windows: ``window_size >= 0``, global blocks in range (prefix tokens are never
    windowed: they attend globally beside window blocks, and every window sees them)."""
    if window_size < 0:
        raise ValueError(f'window_size={window_size} must be >= 0 (0 = all blocks global)')
    bad = [i for i in global_attn_indexes if not 0 <= i < depth]
    if bad:
        raise ValueError(f'global_attn_indexes={tuple(global_attn_indexes)}: {bad} out of range; allowed '
                         f'0..{depth - 1}')


def _resolve_block_out_indices(out_indices: Sequence[int], depth: int) -> tuple[int, ...]:
    """Block indices (negative from the end) -> ``0 .. depth - 1``; at least one."""
    outs = []
    for i in out_indices:
        if not -depth <= i < depth:
            raise ValueError(f'out_indices={tuple(out_indices)}: {i} out of range; allowed '
                             f'{-depth}..{depth - 1}')
        outs.append(i % depth)
    if not outs:
        raise ValueError('out_indices is empty; give at least one block index')
    return tuple(outs)


# ------------------------------------------------------------------ RoPESwin
def _check_swin_sizes(window_size: int, patch_size: int) -> None:
    if not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f'window_size={window_size!r} must be a positive int')
    if patch_size < 1:
        raise ValueError(f'patch_size={patch_size} must be >= 1')


def _check_stage_out_indices(out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
    out_indices = tuple(out_indices)
    bad = [i for i in out_indices if not 0 <= i < num_stages]
    if bad or len(set(out_indices)) != len(out_indices):
        raise ValueError(f'out_indices={out_indices} must be distinct stage indices in [0, {num_stages})')
    return out_indices
