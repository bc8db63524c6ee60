"""Timing, peak memory and output parity for the benchmark (plain PyTorch, any device).

* Time: :func:`time_group` gives each callable a ``torch.utils.benchmark.Timer`` (its clock
  synchronises CUDA before it is read; torch's thread count is pinned while it runs).
  ``warmup`` untimed calls first, then ``reps`` rounds of ``Timer.blocked_autorange``;
  callables that are compared with each other take their rounds *interleaved* (A B C,
  A B C, ...), so a load change on a shared machine hits every contender alike. The rounds
  are merged (``Measurement.merge``); the median is reported with the quartiles.
* Peak memory: the extra memory held by tensors at the worst moment of one call, above
  what was allocated before it (weights and input not counted; activations, workspace
  and, for forward+backward, gradients counted). CUDA: ``torch.cuda.max_memory_allocated``
  minus ``memory_allocated`` before the call. CPU: the same quantity reconstructed from
  ``torch.profiler``'s memory timeline (every tensor allocation and free of the CPU
  allocator, in order); this is tensor memory, not process RSS (no allocator caching or
  fragmentation is counted).
* Kernel ops: :func:`kernel_ops` counts the tensor-producing ATen ops of one call (views
  excluded), the kernel launches a launch-bound GPU pays for.
* Parity: the max absolute difference between two outputs (tensors or lists of them);
  :func:`check_parity` raises :class:`ParityError` beyond a tolerance.
"""
from __future__ import annotations

import gc
import math
import os
import platform
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.benchmark import Measurement, Timer

Output = Union[torch.Tensor, Sequence[torch.Tensor]]


class ParityError(AssertionError):
    """Two implementations that must agree gave different outputs."""


@dataclass(frozen=True)
class TimeStats:
    """Milliseconds per call over ``reps`` timed samples (a sample: one block of calls, averaged)."""
    median: float
    p25: float
    p75: float
    min: float
    reps: int

    @classmethod
    def of(cls, m: Measurement) -> 'TimeStats':
        """From a ``torch.utils.benchmark`` measurement (seconds) to milliseconds."""
        times = torch.tensor(m.times, dtype=torch.float64) * 1e3
        p25, p75 = torch.quantile(times, torch.tensor([0.25, 0.75], dtype=torch.float64)).tolist()
        return cls(m.median * 1e3, p25, p75, times.min().item(), len(m.times))


def time_group(fns: Mapping[str, Callable[[], object]], *, warmup: int = 2, reps: int = 5,
               min_run_time: float = 0.0) -> dict[str, TimeStats]:
    """Time several callables interleaved; ``{name: TimeStats}`` in milliseconds.

    Args:
        fns: zero-argument callables (each one call = one measured unit).
        warmup: untimed calls of each callable first (>= 0).
        reps: rounds (>= 1); in each, every callable runs one ``Timer.blocked_autorange``:
            a block-size probe (one untimed call for a callable slower than ``min_run_time``)
            and at least one timed block.
        min_run_time: seconds each round runs at least (``blocked_autorange``'s); 0: one block.
    """
    if reps < 1 or warmup < 0 or min_run_time < 0:
        raise ValueError(f'reps={reps} must be >= 1, warmup={warmup} >= 0 and min_run_time={min_run_time} >= 0')
    threads = torch.get_num_threads()
    timers = {name: Timer('fn()', globals={'fn': fn}, num_threads=threads, description=name)
              for name, fn in fns.items()}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rounds: dict[str, list[Measurement]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, timer in timers.items():
            rounds[name].append(timer.blocked_autorange(min_run_time=min_run_time))
    return {name: TimeStats.of(Measurement.merge(ms)[0]) for name, ms in rounds.items()}


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak extra CPU tensor memory of one call, from the profiler's memory timeline."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action  # the profiler's own timeline (private API)

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        fn()
    current = peak = 0
    for _, action, _, size in sorted(prof._memory_profile().timeline, key=lambda r: r[0]):
        if action == Action.CREATE:
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


def peak_memory_bytes(fn: Callable[[], object], *, device: torch.device) -> int:
    """Extra tensor memory at the peak of one call of ``fn`` (see the module docstring)."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if device.type == 'cpu':
        return _cpu_peak_bytes(fn)
    raise ValueError(f'peak memory: device type {device.type!r} is not supported (cpu, cuda)')


class _KernelCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Views (also ``_unsafe_view``, a view not declared as one) and metadata queries
        # (promote_types, sizes) launch nothing.
        if not func.is_view and func.overloadpacket is not torch.ops.aten._unsafe_view and any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(out)):
            self.count += 1
        return out


def kernel_ops(fn: Callable[[], object]) -> int:
    """Tensor-producing ATen ops one call of ``fn`` dispatches, views excluded.

    On a GPU each is (at least) one kernel launch; at batch 1 a GPU is launch-bound, so
    this count, measured on any device, predicts where the GPU time goes.
    """
    with _KernelCounter() as counter:
        fn()
    return counter.count


def _flat(out: Output) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    raise TypeError(f'expected a tensor or a list/tuple of tensors, got {type(out).__name__}')


def max_abs_diff(a: Output, b: Output) -> float:
    """Max absolute difference over all tensors; ``inf`` if the structures or shapes differ."""
    fa, fb = _flat(a), _flat(b)
    if len(fa) != len(fb) or any(x.shape != y.shape for x, y in zip(fa, fb)):
        return math.inf
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(fa, fb))


def check_parity(reference: Output, candidate: Output, *, atol: float, what: str) -> float:
    """Return the max abs difference; raise :class:`ParityError` when it exceeds ``atol``.

    Args:
        reference, candidate: outputs (tensor or list of tensors) of the two implementations.
        atol: tolerance on the max absolute difference.
        what: a description of the comparison for the error message.
    """
    diff = max_abs_diff(reference, candidate)
    if not diff <= atol:     # also catches NaN
        shapes = ([tuple(t.shape) for t in _flat(reference)], [tuple(t.shape) for t in _flat(candidate)])
        raise ParityError(f'{what}: outputs differ, max abs diff {diff:.3g} > atol {atol:g} '
                          f'(shapes {shapes[0]} vs {shapes[1]}); the comparison would not be like for like')
    return diff


def pin_threads(num_threads: int) -> int:
    """Fix torch's intra-op threads (and one inter-op thread); return the count in use."""
    if num_threads < 1:
        raise ValueError(f'num_threads={num_threads} must be >= 1')
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:     # already set (parallel work has started): keep it
        pass
    return torch.get_num_threads()


def describe_environment(device: torch.device) -> dict[str, str]:
    """Device, threads and versions, as printed above the tables."""
    info = {
        'device': device.type,
        'torch': torch.__version__,
        'python': platform.python_version(),
        'threads': f'{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op',
        'cpu': _cpu_name(),
        'cpu cores visible': str(len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                                 else os.cpu_count()),
    }
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = str(torch.version.cuda)
        info['tf32 matmul'] = str(torch.backends.cuda.matmul.allow_tf32)
    try:
        import timm
        info['timm'] = timm.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'
