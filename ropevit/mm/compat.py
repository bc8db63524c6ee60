"""Checkpoint loading on torch >= 2.6: the replacements behind :mod:`ropevit.mm.runtime`'s
``'checkpoint_loading'`` fix (nothing here changes anything when imported).

torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``; mmengine 0.10.7 calls ``torch.load``
without it, so its own checkpoints (numpy arrays/scalars in ``meta``, ``HistoryBuffer`` in
``message_hub``) fail with ``UnpicklingError ... numpy._core.multiarray._reconstruct`` and
``--resume`` / ``load_from`` break. The fix allowlists the few types mmengine checkpoints contain
(what ``torch.serialization.add_safe_globals`` does) and keeps ``weights_only=True``, and routes
mmengine's local-file loader through :func:`ropevit.checkpoint.io.load_checkpoint_file`, so that a
refused file says why instead of printing a pickle error.
"""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict
from typing import Any, Callable

from ropevit.checkpoint.io import load_checkpoint_file, safe_globals


def _load_from_local(filename: str, map_location: Any = None) -> Any:
    return load_checkpoint_file(osp.expanduser(filename), map_location=map_location)


def with_mmengine_globals(allowed: set) -> set:
    """torch's user allowlist (``torch._weights_only_unpickler._marked_safe_globals_set``) plus the
    types of :func:`ropevit.checkpoint.io.safe_globals`. torch's ``add_safe_globals`` rebinds that
    set to such a union too (it never changes it in place), so the runtime table can put it back."""
    return allowed | set(safe_globals())


def with_local_loader(schemes: dict[str, Callable]) -> dict[str, Callable]:
    """``CheckpointLoader._schemes`` with prefix ``''`` (mmengine's local-path loader, a bare
    ``torch.load``) served by :func:`ropevit.checkpoint.io.load_checkpoint_file`; order kept
    (MMEngine matches the longest prefix first and ``''`` last)."""
    return OrderedDict((prefix, _load_from_local if prefix == '' else loader) for prefix, loader in schemes.items())
