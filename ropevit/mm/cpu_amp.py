"""``--amp`` on machines without a GPU: MMEngine's ``AmpOptimWrapper`` with bf16 autocast on the CPU.

MMEngine 0.10.7's ``AmpOptimWrapper.__init__`` asserts that CUDA (or an NPU/MLU/MUSA) is available,
although its ``autocast`` helper supports the CPU with bfloat16. When no accelerator is present (and
only then) :func:`cpu_amp_init` builds the wrapper for CPU autocast instead: ``dtype`` must be bfloat16
(the only CPU autocast type) and the loss scaler is a disabled ``GradScaler``: bf16 has float32's
exponent range, so gradients do not underflow and need no scaling. ``optim_context``, ``backward``,
``step`` and the state dict stay MMEngine's. On GPU machines nothing changes.

mmcv's CPU kernels have no bfloat16 implementation (``nms`` fails with "expected scalar type Float but
found BFloat16" inside a Mask R-CNN's RPN under CPU autocast). Autocast itself runs such ops in
float32; :func:`float32_under_cpu_autocast` does the same for the mmcv ops a detector calls
(``nms``, ``roi_align``): bf16 CPU inputs are cast to float32 and the results back to bf16, only
while CPU autocast is on.

The replacements behind :mod:`ropevit.mm.runtime`'s ``'cpu_amp'`` fix (nothing here changes
anything when imported).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Union

import torch


def _has_accelerator() -> bool:
    from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


def cpu_amp_init(original: Callable) -> Callable:
    """``AmpOptimWrapper.__init__`` that builds the wrapper for bf16 CPU autocast when no accelerator is
    present, and is ``original`` otherwise."""
    @functools.wraps(original)
    def __init__(self: Any, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None, use_fsdp: bool = False, **kwargs: Any) -> None:
        if _has_accelerator():
            return original(self, loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
        _init_for_cpu(self, loss_scale=loss_scale, dtype=dtype, **kwargs)

    return __init__


def _init_for_cpu(self: Any, *, loss_scale: Union[str, float, dict], dtype: Union[str, torch.dtype, None],
                  **kwargs: Any) -> None:
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


def float32_under_cpu_autocast(fn: Callable) -> Callable:
    """Run ``fn`` on float32 copies of its bf16 CPU tensor inputs; float32 outputs go back to bf16
    (callers such as mmdet's RoI extractor write them into bf16 buffers)."""
    def is_bf16_cpu(a: Any) -> bool:
        return isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 and a.device.type == 'cpu'

    def back(out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return out.bfloat16() if out.dtype == torch.float32 else out
        if isinstance(out, tuple):
            return tuple(back(o) for o in out)
        return out

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_autocast_enabled('cpu') or not any(map(is_bf16_cpu, (*args, *kwargs.values()))):
            return fn(*args, **kwargs)
        args = tuple(a.float() if is_bf16_cpu(a) else a for a in args)
        kwargs = {k: v.float() if is_bf16_cpu(v) else v for k, v in kwargs.items()}
        return back(fn(*args, **kwargs))

    return wrapper
