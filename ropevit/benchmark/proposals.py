"""Candidate speed-ups measured side by side with the shipped code (``--proposed``).

:func:`apply_rope_complex` computes exactly what :func:`ropevit.layers.rope.apply_rope`
does (the same interleaved pairs, float32 products for a bf16 input, the result cast
back) as one complex multiplication ``(x0 + i x1) * (cos + i sin)``: one pass over q/k
instead of the ~7 elementwise passes of the unbind/multiply/stack form.
:func:`swap_function` puts it into ropevit's modules for the duration of a ``with``
block, so the benchmark can time "the same model, the proposed kernel" without
editing the backbone.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

import torch


def apply_rope_complex(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       rot: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rotate pairs ``(2j, 2j+1)`` of ``x [..., N, hd]`` by ``cos, sin [..., N, hd/2]`` (out of place).

    ``rot`` (the shipped kernel's precomputed complex table) is accepted and not used: this
    kernel builds its own, as the shipped one did when it was proposed.

    Products are computed in ``promote(x.dtype, cos.dtype, float32)`` and the result is
    returned in ``x.dtype``, like ``apply_rope``. ``x`` may be a strided view of a fused
    qkv tensor; it is viewed as complex without a copy when its strides allow.
    """
    wdt = torch.promote_types(torch.promote_types(x.dtype, cos.dtype), torch.float32)
    pairs = x.to(wdt).unflatten(-1, (-1, 2))                                    # [..., N, P, 2]
    if pairs.stride(-1) != 1 or pairs.storage_offset() % 2 or any(s % 2 for s in pairs.stride()[:-1]):
        pairs = pairs.contiguous()
    rot = torch.complex(cos.to(wdt), sin.to(wdt))                               # [..., N, P]
    out = torch.view_as_real(torch.view_as_complex(pairs) * rot)                # [..., N, P, 2]
    return out.flatten(-2).to(x.dtype)                                          # [..., N, hd]


#: modules that call ``apply_rope`` by that name.
APPLY_ROPE_MODULES: tuple[str, ...] = ('ropevit.layers.attention', 'ropevit.layers.swin_attention')


@contextmanager
def swap_function(name: str, fn: Callable, *, modules: Sequence[str] = APPLY_ROPE_MODULES) -> Iterator[list[int]]:
    """Replace the global ``name`` of each of ``modules`` by ``fn`` inside the block; yields a call counter.

    Raises:
        RuntimeError: no module has a global ``name``.
    """
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return fn(*args, **kwargs)

    patched = []
    for mod_name in modules:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if name in vars(mod):
            patched.append((mod, vars(mod)[name]))
            setattr(mod, name, counted)
    if not patched:
        raise RuntimeError(f'swap_function: none of {list(modules)} has a global {name!r}')
    try:
        yield calls
    finally:
        for mod, orig in patched:
            setattr(mod, name, orig)
