"""Reading checkpoint files safely.

``torch.load(weights_only=True)`` refuses any pickled object that is not a tensor or a
plain container. MMEngine checkpoints also carry a few harmless non-tensor objects
(numpy scalars/arrays in ``meta`` and the message hub's ``HistoryBuffer``), so we
allowlist exactly those and keep ``weights_only=True``: a checkpoint from an untrusted
source still cannot run code.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any

import numpy as np
import torch


def safe_globals() -> list[Any]:
    """The non-tensor types an MMEngine/ropevit checkpoint may hold."""
    allowed: list[Any] = [np.dtype, np.ndarray]
    # numpy >= 2 pickles arrays through numpy._core; < 2 through numpy.core.
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = __import__(mod_name, fromlist=['_reconstruct', 'scalar'])
        except ImportError:
            continue
        allowed += [mod._reconstruct, mod.scalar]
    # dtype classes (numpy.dtypes.Float64DType etc.), pickled with arrays on numpy >= 1.25.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        # HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, 'mean').
        # A general getattr would let a pickle walk to any callable, so the name
        # 'builtins.getattr' is bound to a getattr that only resolves those methods.
        allowed += [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')]
    except ImportError:  # plain-torch use without mmengine
        pass
    import collections
    allowed += [collections.OrderedDict, collections.defaultdict]
    return allowed


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in set(HistoryBuffer._statistics_methods) | {'min', 'max', 'current', 'mean'}:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def _load_safetensors(path: str, map_location: Any) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (timm's / Hugging Face's weights): tensors only, nothing to execute."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    device = map_location if isinstance(map_location, str) else 'cpu'
    try:
        return load_file(path, device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise RuntimeError(f'could not read checkpoint {path} (truncated or not a safetensors file): '
                           f'{_first_line(e)}') from None


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds a pickled object outside the allowlist."""


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = 'cpu') -> Any:
    """``torch.load`` with ``weights_only=True`` and the MMEngine allowlist.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file pickles an object outside the allowlist
            (it is never executed).
        RuntimeError: the file is truncated or not a checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        return _load_safetensors(path, map_location)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        if refused is None:  # a broken pickle stream, not a refused object
            raise RuntimeError(f'could not read checkpoint {path} (truncated or not a torch checkpoint): '
                               f'{_first_line(e)}') from None
        raise UnsafeCheckpointError(
            f'refused to load {path}: it contains a pickled object ({refused}) outside the allowlist of '
            f'tensors, containers, numpy arrays/scalars and mmengine HistoryBuffer, and such an '
            f'object could run code when loaded. If you trust this file, re-save its state dict '
            f'with torch.save(model.state_dict(), ...).') from None
    except Exception as e:  # noqa: BLE001  (a stream of random bytes can fail the unpickler anywhere:
        # EOFError, IndexError 'pop from empty list', KeyError, AssertionError, struct.error, ...)
        raise RuntimeError(f'could not read checkpoint {path} (truncated or not a torch checkpoint): '
                           f'{_first_line(e)}') from None


def _refused_global(message: str) -> str | None:
    """The object torch's weights-only unpickler refused, or None for other unpickling errors."""
    # torch words it as "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module x is blocked".
    match = re.search(r'GLOBAL ([\w.]+)', message)
    if match:
        return match.group(1)
    if 'getattr(' in message and 'is not allowed in a checkpoint' in message:
        return 'builtins.getattr (restricted)'
    return None


def _first_line(e: BaseException) -> str:
    """The reason, on one line. torch's weights-only message opens with advice to load with
    ``weights_only=False`` (which would let a checkpoint run code): never pass that on; its reason
    follows ``WeightsUnpickler error:``."""
    text = str(e).strip()
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1].strip()
    elif 'weights_only' in text:
        text = 'the weights-only unpickler refused the stream'
    return text.splitlines()[0] if text else type(e).__name__
