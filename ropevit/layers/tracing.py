"""Which tracer, if any, is running, and the one layout helper the exporters need.

Eager code takes fast, shape-specialised paths (skip a pad of 0, cache tables per grid, a
complex rotation); under a tracer the backbones take branch-free forms instead, so that a
traced graph computes from the input's shape what eager computes at any size.
"""
from __future__ import annotations

import torch


def is_compiling() -> bool:
    """True while ``torch.compile`` (Dynamo) or ``torch.export`` traces the caller."""
    compiler = getattr(torch, 'compiler', None)
    return bool(compiler is not None and getattr(compiler, 'is_compiling', lambda: False)())


def is_exporting() -> bool:
    """True while ``torch.export`` (also under ``torch.onnx.export(dynamo=True)``) or
    ``torch.jit.trace`` (``torch.onnx.export(dynamo=False)``) traces the caller."""
    compiler = getattr(torch, 'compiler', None)
    exporting = bool(compiler is not None and getattr(compiler, 'is_exporting', lambda: False)())
    return exporting or torch.jit.is_tracing()


def is_tracing() -> bool:
    """True under any tracer (compile, export, TorchScript tracing).

    While exporting, sizes may be symbolic (``SymInt``) or traced: the backbones then always
    pad, always mask and cache nothing, so no branch on a size is baked into the graph.
    """
    return is_compiling() or is_exporting()


def contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()``; under an exporter, always a copy in contiguous layout.

    With symbolic sizes ``torch.export`` cannot always prove that a view is contiguous (a
    crop of maybe zero, a permute of a maybe-1 axis) and asks whether a size is 1, which
    specialises the graph; a clone in contiguous format has strides it knows.
    """
    if is_exporting():
        return x.clone(memory_format=torch.contiguous_format)
    return x.contiguous()
