"""Let MMEngine's own distributed machinery run on machines without a GPU (CPU processes, gloo).

MMEngine 0.10.7 assumes CUDA whenever it is launched with ``--launcher pytorch`` (torchrun):

* ``mmengine.dist.utils._init_dist_pytorch`` calls ``torch.cuda.set_device(LOCAL_RANK)`` before
  ``init_process_group``: on a CPU-only machine that raises "Found no NVIDIA driver".
* ``Runner.wrap_model`` builds ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, which PyTorch's
  DDP rejects for a module whose parameters live on the CPU.
* Configs inherit ``env_cfg.dist_cfg.backend='nccl'`` from mmdet/mmseg's ``default_runtime``; NCCL needs GPUs.

When CUDA is not available (and only then) the two functions below step in: no ``set_device``, NCCL
replaced by gloo (with a warning that says so), and ``device_ids=None`` for CPU modules. On a machine
with GPUs nothing changes. The process group, the samplers, DDP and the hooks stay MMEngine's and
PyTorch's: this is not a second distributed implementation.

Applied on ``import ropevit.mm`` (through :mod:`ropevit.mm.reliability`); :func:`revert` undoes it.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.distributed as torch_dist

_ORIGINAL: dict[str, Callable] = {}


def _init_dist_pytorch(backend: str, init_backend: str = 'torch', **kwargs: Any) -> None:
    if torch.cuda.is_available() or init_backend != 'torch':
        return _ORIGINAL['init_dist_pytorch'](backend, init_backend=init_backend, **kwargs)
    if backend == 'nccl':
        from mmengine.logging import print_log
        print_log('CUDA is not available: using the gloo backend instead of nccl for CPU processes.',
                  logger='current', level=30)
        backend = 'gloo'
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def _wrap_ddp_init(original: Callable) -> Callable:
    def __init__(self: Any, module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        params = list(module.parameters())
        if params and all(p.device.type == 'cpu' for p in params):
            kwargs['device_ids'] = None  # DDP's rule for CPU modules
            kwargs.pop('output_device', None)
        original(self, module, *args, **kwargs)

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def apply() -> None:
    """Install (idempotent)."""
    if _ORIGINAL:
        return
    import mmengine.dist.utils as dist_utils
    from mmengine.model import MMDistributedDataParallel
    _ORIGINAL.update(init_dist_pytorch=dist_utils._init_dist_pytorch,
                     ddp_init=MMDistributedDataParallel.__init__)
    dist_utils._init_dist_pytorch = _init_dist_pytorch
    MMDistributedDataParallel.__init__ = _wrap_ddp_init(_ORIGINAL['ddp_init'])


def revert() -> None:
    if not _ORIGINAL:
        return
    import mmengine.dist.utils as dist_utils
    from mmengine.model import MMDistributedDataParallel
    dist_utils._init_dist_pytorch = _ORIGINAL['init_dist_pytorch']
    MMDistributedDataParallel.__init__ = _ORIGINAL['ddp_init']
    _ORIGINAL.clear()


apply()
