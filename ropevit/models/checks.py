"""Option checks shared by the backbones' constructors: small pure functions that raise a
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
