"""Run a group of contenders on one input size: parity first, then interleaved timing and
peak memory per dtype and mode, one :class:`~benchmarks.report.Row` each."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Literal, Optional, Sequence

import torch
from torch import nn

from .measure import Output, check_parity, peak_memory_bytes, time_group
from .report import Results, Row, Size, size_str

Mode = Literal['fwd', 'fwd+bwd']
DType = Literal['fp32', 'bf16']
MODES: tuple[str, ...] = ('fwd', 'fwd+bwd')
DTYPES: tuple[str, ...] = ('fp32', 'bf16')


@dataclass
class Contender:
    """One implementation in a comparison.

    Args:
        label: the ``model`` column (unique within a group).
        impl: ``'ropevit' | 'timm' | 'mmdet' | 'manual-softmax' | 'compiled'``.
        model: the module (already on the device, in eval mode).
        forward: ``(model, images) -> features`` (tensor or list of tensors).
        context: a factory of a context manager entered around every call (e.g. the
            manual-softmax swap); ``contextlib.nullcontext`` by default.
    """
    label: str
    impl: str
    model: nn.Module
    forward: Callable[[nn.Module, torch.Tensor], Output] = field(default=lambda m, x: m(x))
    context: Callable[[], ContextManager] = contextlib.nullcontext

    def run(self, x: torch.Tensor) -> Output:
        with self.context():
            return self.forward(self.model, x)


@dataclass
class Parity:
    """``candidate`` must match ``reference`` within ``atol`` (fp32 forward, same input)."""
    candidate: str
    reference: str
    atol: float


@dataclass
class BenchConfig:
    """What every group measures and how."""
    device: torch.device
    dtypes: Sequence[str] = ('fp32',)
    modes: Sequence[str] = ('fwd',)
    warmup: int = 2
    reps: int = 5
    min_run_time: float = 0.0
    batch: int = 1
    memory: bool = True
    seed: int = 0
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES] + [d for d in self.dtypes if d not in DTYPES]
        if bad:
            raise ValueError(f'unknown modes/dtypes {bad}; modes: {MODES}, dtypes: {DTYPES}')
        if self.min_run_time < 0:
            raise ValueError(f'min_run_time={self.min_run_time} must be >= 0')
        if self.batch < 1:
            raise ValueError(f'batch={self.batch} must be >= 1')


def _autocast(device: torch.device, dtype: str) -> ContextManager:
    if dtype == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _loss(out: Output) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    return sum(o.float().sum() for o in out)


def make_call(c: Contender, x: torch.Tensor, *, mode: str, dtype: str) -> Callable[[], None]:
    """A zero-argument callable doing one forward (no grad) or forward+backward."""
    device = x.device

    if mode == 'fwd':
        def call() -> None:
            with torch.no_grad(), _autocast(device, dtype):
                c.run(x)
    else:
        def call() -> None:
            c.model.zero_grad(set_to_none=True)
            with _autocast(device, dtype):
                loss = _loss(c.run(x))
            loss.backward()
    return call


def run_group(results: Results, cfg: BenchConfig, suite: str, contenders: Sequence[Contender], size: Size, *,
              parity: Sequence[Parity] = (), references: Sequence[Contender] = (),
              modes: Optional[Sequence[str]] = None,
              dtypes: Optional[Sequence[str]] = None) -> dict[tuple[str, str, str], Row]:
    """Check parity, then time (interleaved) and measure every contender at ``size``.

    ``references`` take part in parity checks only (e.g. timm's tokens reshaped to NCHW
    to compare with ropevit's maps), they are not timed.

    Returns:
        ``{(label, mode, dtype): Row}``.

    Raises:
        ParityError: a parity pair disagrees (nothing is timed then).
    """
    labels = [c.label for c in contenders]
    if len(set(labels)) != len(labels):
        raise ValueError(f'contender labels must be unique, got {labels}')
    by_label = {c.label: c for c in [*contenders, *references]}
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, 3, *size, generator=gen).to(cfg.device)

    checks: dict[str, str] = {}
    for p in parity:
        with torch.no_grad():
            ref = by_label[p.reference].run(x)
            got = by_label[p.candidate].run(x)
        diff = check_parity(ref, got, atol=p.atol, what=f'[{suite}] {p.candidate} vs {p.reference} '
                                                         f'at {size_str(size)}')
        checks[p.candidate] = f'max abs diff {diff:.1e} vs {p.reference}'
        cfg.log(f'  parity {p.candidate} vs {p.reference} @ {size_str(size)}: {diff:.2e} (atol {p.atol:g})')
        del ref, got

    out: dict[tuple[str, str, str], Row] = {}
    for dtype in (dtypes or cfg.dtypes):
        for mode in (modes or cfg.modes):
            calls = {c.label: make_call(c, x, mode=mode, dtype=dtype) for c in contenders}
            stats = time_group(calls, warmup=cfg.warmup, reps=cfg.reps, min_run_time=cfg.min_run_time)
            for c in contenders:
                peak = None
                if cfg.memory:
                    peak = peak_memory_bytes(calls[c.label], device=cfg.device) / 2 ** 20
                row = results.add(Row(suite, c.label, c.impl, tuple(size), mode, dtype, stats[c.label], peak,
                                      checks.get(c.label)))
                out[(c.label, mode, dtype)] = row
                mem = '' if peak is None else f', peak {peak:.0f} MiB'
                cfg.log(f'  {c.label:42s} {size_str(size):>9s} {mode:7s} {dtype}: '
                        f'{stats[c.label].median:9.1f} ms{mem}')
            for c in contenders:
                c.model.zero_grad(set_to_none=True)
    return out
