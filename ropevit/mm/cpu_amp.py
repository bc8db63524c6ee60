"""``--amp`` on machines without a GPU: MMEngine's ``AmpOptimWrapper`` with bf16 autocast on the CPU.

MMEngine 0.10.7's ``AmpOptimWrapper.__init__`` asserts that CUDA (or an NPU/MLU/MUSA) is available,
although its ``autocast`` helper supports the CPU with bfloat16. When no accelerator is present (and
only then) :func:`_cpu_init` builds the wrapper for CPU autocast instead: ``dtype`` must be bfloat16
(the only CPU autocast type) and the loss scaler is a disabled ``GradScaler``: bf16 has float32's
exponent range, so gradients do not underflow and need no scaling. ``optim_context``, ``backward``,
``step`` and the state dict stay MMEngine's. On GPU machines nothing changes.

Applied on ``import ropevit.mm`` (through :mod:`ropevit.mm.reliability`).
"""
from __future__ import annotations

from typing import Any, Callable, Union

import torch

_ORIGINAL: dict[str, Callable] = {}


def _has_accelerator() -> bool:
    from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


def _cpu_init(self: Any, loss_scale: Union[str, float, dict] = 'dynamic',
              dtype: Union[str, torch.dtype, None] = None, use_fsdp: bool = False, **kwargs: Any) -> None:
    if _has_accelerator():
        return _ORIGINAL['init'](self, loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
    if dtype not in (None, 'bfloat16', torch.bfloat16):
        raise ValueError(f'AmpOptimWrapper on the CPU: dtype={dtype!r} is not supported; CPU autocast runs in '
                         f"bfloat16 only (allowed: None or 'bfloat16')")
    if not (loss_scale == 'dynamic' or isinstance(loss_scale, (float, dict))):
        raise TypeError(f'loss_scale must be of type float, dict, or "dynamic", but got {loss_scale}')
    from mmengine.optim import OptimWrapper
    OptimWrapper.__init__(self, **kwargs)
    self._scale_update_param = None
    self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)  # bf16: no loss scaling needed
    self.cast_dtype = torch.bfloat16


def apply() -> None:
    if _ORIGINAL:
        return
    from mmengine.optim import AmpOptimWrapper
    _ORIGINAL['init'] = AmpOptimWrapper.__init__
    AmpOptimWrapper.__init__ = _cpu_init


def revert() -> None:
    if not _ORIGINAL:
        return
    from mmengine.optim import AmpOptimWrapper
    AmpOptimWrapper.__init__ = _ORIGINAL.pop('init')


apply()
