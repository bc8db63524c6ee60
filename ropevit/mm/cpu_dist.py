"""Let MMEngine's own distributed machinery run on machines without a GPU (CPU processes, gloo).

MMEngine 0.10.7 assumes CUDA whenever it is launched with ``--launcher pytorch`` (torchrun) or
``--launcher slurm`` (srun):

* ``mmengine.dist.utils._init_dist_pytorch`` / ``_init_dist_slurm`` call ``torch.cuda.set_device``
  before ``init_process_group``: on a CPU-only machine that raises "Found no NVIDIA driver".
* ``Runner.wrap_model`` builds ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, which PyTorch's
  DDP rejects for a module whose parameters live on the CPU.
* Configs inherit ``env_cfg.dist_cfg.backend='nccl'`` from mmdet/mmseg's ``default_runtime``; NCCL needs GPUs.

When CUDA is not available (and only then): MMEngine's launcher functions run with
``torch.cuda.set_device`` made a no-op for the duration of the call and NCCL replaced by gloo (with a
warning that says so), and DDP gets ``device_ids=None`` for CPU modules. On a machine
with GPUs nothing changes. The process group, the samplers, DDP and the hooks stay MMEngine's and
PyTorch's: this is not a second distributed implementation.

The replacements behind :mod:`ropevit.mm.runtime`'s ``'cpu_dist'`` fix (nothing here changes
anything when imported).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import torch


@contextlib.contextmanager
def _without_cuda_set_device() -> Iterator[None]:
    """MMEngine's launchers call ``torch.cuda.set_device(local_rank)`` unconditionally."""
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _cpu_backend(backend: str) -> str:
    if backend != 'nccl':
        return backend
    from mmengine.logging import print_log
    print_log('CUDA is not available: using the gloo backend instead of nccl for CPU processes.',
              logger='current', level=30)
    return 'gloo'


def cpu_launcher(original: Callable) -> Callable:
    """``mmengine.dist.utils._init_dist_pytorch`` / ``_init_dist_slurm`` for CPU processes when CUDA
    is not available; ``original`` otherwise."""
    @functools.wraps(original)
    def init(backend: str, *args: Any, init_backend: str = 'torch', **kwargs: Any) -> None:
        if torch.cuda.is_available() or init_backend != 'torch':
            return original(backend, *args, init_backend=init_backend, **kwargs)
        with _without_cuda_set_device():
            return original(_cpu_backend(backend), *args, init_backend=init_backend, **kwargs)

    return init


def cpu_ddp_init(original: Callable) -> Callable:
    """``MMDistributedDataParallel.__init__`` with DDP's rule for CPU modules (``device_ids=None``)."""
    def __init__(self: Any, module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        params = list(module.parameters())
        if params and all(p.device.type == 'cpu' for p in params):
            kwargs['device_ids'] = None  # DDP's rule for CPU modules
            kwargs.pop('output_device', None)
        original(self, module, *args, **kwargs)

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__
