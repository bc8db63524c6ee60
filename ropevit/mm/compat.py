"""Compatibility fixes the pinned stack needs on torch >= 2.6. Imported by ``ropevit.mm``.

1. Checkpoint loading. torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``;
   mmengine 0.10.7 calls ``torch.load`` without it, so its own checkpoints (numpy
   arrays/scalars in ``meta``, ``HistoryBuffer`` in ``message_hub``) fail with
   ``UnpicklingError ... numpy._core.multiarray._reconstruct`` and ``--resume`` /
   ``load_from`` break. We register the few types mmengine checkpoints contain with
   ``torch.serialization.add_safe_globals`` and keep ``weights_only=True``, and route
   mmengine's local-file loader through :func:`ropevit.checkpoint.io.load_checkpoint_file`
   so that a refused file says why instead of printing a pickle error.
"""
from __future__ import annotations

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from ropevit.checkpoint.io import load_checkpoint_file, safe_globals

_APPLIED = False


def _load_from_local(filename: str, map_location=None):
    import os.path as osp
    filename = osp.expanduser(filename)
    return load_checkpoint_file(filename, map_location=map_location)


def apply() -> None:
    """Apply the fixes once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    torch.serialization.add_safe_globals(safe_globals())
    # Prefix '' is mmengine's local-path loader; force=True replaces its torch.load call.
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)
    _APPLIED = True


apply()
