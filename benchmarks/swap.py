"""One context manager that reroutes (or just counts) calls of a function inside ropevit's modules.

The benchmark uses it three ways: the manual-softmax baseline (ropevit's attention calls
:func:`~benchmarks.attention.manual_softmax_attention` instead of SDPA), a check that the swap
took effect (its call counter), and counting how often the RoPE tables are built per forward.
"""
from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence


class _ModuleWith(types.ModuleType):
    """A view of ``module`` in which ``name`` is ``value`` (everything else is the module's)."""

    def __init__(self, module: types.ModuleType, name: str, value: Callable) -> None:
        super().__init__(f'{module.__name__} (benchmark swap of {name})')
        self._module = module
        setattr(self, name, value)

    def __getattr__(self, attr: str):
        return getattr(self._module, attr)


def _targets(modules: Optional[Sequence[str]], package: str) -> list[types.ModuleType]:
    """The modules named (those that import), or every loaded module of ``package``."""
    if modules is None:
        return [m for n, m in list(sys.modules.items())
                if m is not None and (n == package or n.startswith(package + '.'))]
    found = []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


@contextmanager
def swap_calls(owner: types.ModuleType, name: str, replacement: Optional[Callable] = None, *,
               modules: Optional[Sequence[str]] = None, package: str = 'ropevit') -> Iterator[list[int]]:
    """Inside the block, calls of ``owner.name`` made by ``modules`` go to ``replacement``.

    Both ways a module can reach the function are rerouted: a global bound to the function
    itself (``from torch.nn.functional import scaled_dot_product_attention``) and a global
    bound to ``owner`` (``import torch.nn.functional as F``; replaced by a view of ``owner``
    whose ``name`` is swapped). Everything is restored on exit.

    Args:
        owner: the module that defines the function (``torch.nn.functional``, ``ropevit.layers.rope``).
        name: the function's name in ``owner``.
        replacement: what to call instead; ``None`` keeps the function (only count its calls).
        modules: the modules to patch; ``None``: every loaded module of ``package``.
        package: see ``modules``.

    Yields:
        A one-item list counting the rerouted calls.

    Raises:
        RuntimeError: none of the modules refers to the function or to ``owner``.
    """
    target = getattr(owner, name, None)
    where = list(modules) if modules is not None else f'the loaded {package} modules'
    if not callable(target):
        raise RuntimeError(f'{owner.__name__} has no function {name!r}, so the swap cannot be built')
    calls = [0]
    fn = target if replacement is None else replacement

    def counted(*args, **kwargs):
        calls[0] += 1
        return fn(*args, **kwargs)

    patched: list[tuple[types.ModuleType, str, object]] = []
    for mod in _targets(modules, package):
        for attr, value in list(vars(mod).items()):
            if value is target:
                patched.append((mod, attr, value))
                setattr(mod, attr, counted)
            elif value is owner and mod is not owner:
                patched.append((mod, attr, value))
                setattr(mod, attr, _ModuleWith(owner, name, counted))
    if not patched:
        raise RuntimeError(f'{owner.__name__}.{name}: none of {where} refers to it (or to {owner.__name__}), '
                           f'so the swap cannot be built')
    try:
        yield calls
    finally:
        for mod, attr, value in reversed(patched):
            setattr(mod, attr, value)
