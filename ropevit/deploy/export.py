"""Export a backbone (or any image -> tensors module) to ``torch.export`` and ONNX with
dynamic batch, height and width, and check the result against eager PyTorch.

The backbones need no wrapper: under an exporter they take their branch-free forms
(``ropevit.layers.rope.is_tracing``): the real-valued rotation instead of the complex one,
padding, window masks and position-embedding resize computed from the input's shape, no
table cache. These helpers only hold the settings that make the three exporters keep the
sizes symbolic:

* ``torch.export``: ``Dim.DYNAMIC`` for batch, H and W, traced with size-oblivious
  reasoning (as ``torch.onnx.export(dynamo=True)`` does itself), so no size is
  specialised to 1;
* ``torch.onnx.export(dynamo=True)``: the same ``dynamic_shapes``;
* ``torch.onnx.export(dynamo=False)`` (TorchScript tracing): ``dynamic_axes``.

``dynamic=False`` exports one fixed size: every size-dependent tensor (RoPE tables, masks,
the resized position embedding) is then a constant of the graph, which TensorRT-style
static engines want.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterable, Literal, Optional, Sequence

import torch
from torch import nn

Exporter = Literal['dynamo', 'torchscript']
EXPORTERS: tuple[str, ...] = ('dynamo', 'torchscript')
#: ONNX opset of both exporters (dynamo's default in torch 2.14; TorchScript's SDPA needs >= 14).
OPSET = 18
INPUT_NAME = 'image'


def size_oblivious() -> contextlib.AbstractContextManager:
    """Trace with size-oblivious reasoning: a symbolic size is not asked whether it is 0 or 1
    (which would specialise the graph to the example's batch or grid)."""
    return torch.fx.experimental._config.patch(backed_size_oblivious=True)


def image_dynamic_shapes(dynamic: bool = True) -> Optional[tuple[dict, ...]]:
    """``dynamic_shapes`` for one ``[B, C, H, W]`` argument: batch, H and W dynamic."""
    if not dynamic:
        return None
    d = torch.export.Dim.DYNAMIC
    return ({0: d, 2: d, 3: d},)


def output_names(num_outputs: int) -> list[str]:
    return [f'out{i}' for i in range(num_outputs)]


def flatten_outputs(out) -> list[torch.Tensor]:
    """A tensor, or a (nested) list/tuple of tensors -> a flat list."""
    if isinstance(out, torch.Tensor):
        return [out]
    flat: list[torch.Tensor] = []
    for o in out:
        flat.extend(flatten_outputs(o))
    return flat


def export_program(model: nn.Module, example: torch.Tensor, *, dynamic: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` (in eval mode) at ``example`` ``[B, C, H, W]``."""
    model.eval()
    with size_oblivious(), torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=image_dynamic_shapes(dynamic))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, *, exporter: Exporter = 'dynamo',
                dynamic: bool = True, opset: int = OPSET) -> list[str]:
    """Write ``model`` as ONNX to ``path`` with plain ``torch.onnx.export``.

    Returns:
        the output names (``out0 ...``, one per output tensor).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter={exporter!r}; allowed: {EXPORTERS}')
    model.eval()
    with torch.no_grad():
        names = output_names(len(flatten_outputs(model(example))))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export.*')
        if exporter == 'dynamo':
            torch.onnx.export(model, (example,), path, dynamo=True, input_names=[INPUT_NAME],
                              output_names=names, dynamic_shapes=image_dynamic_shapes(dynamic),
                              opset_version=opset, verbose=False)
        else:
            axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
            axes.update({n: {0: 'batch', 2: f'{n}_h', 3: f'{n}_w'} for n in names})
            torch.onnx.export(model, (example,), path, dynamo=False, input_names=[INPUT_NAME],
                              output_names=names, dynamic_axes=axes if dynamic else None,
                              opset_version=opset)
    return names


def onnx_session(path: str, providers: Optional[Sequence[str]] = None):
    """An onnxruntime ``InferenceSession`` (CPU unless ``providers`` says otherwise)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 4          # errors reach the caller as exceptions
    return ort.InferenceSession(path, opts, providers=list(providers or ['CPUExecutionProvider']))


def run_onnx(session, x: torch.Tensor) -> list[torch.Tensor]:
    name = session.get_inputs()[0].name
    return [torch.from_numpy(o) for o in session.run(None, {name: x.detach().cpu().numpy()})]


def max_abs_diff(outs: Iterable[torch.Tensor], refs: Iterable[torch.Tensor]) -> float:
    """Largest ``|out - ref|`` over paired tensors; ``inf`` if any shapes differ."""
    outs, refs = list(outs), list(refs)
    if len(outs) != len(refs):
        return float('inf')
    worst = 0.0
    for o, r in zip(outs, refs):
        if tuple(o.shape) != tuple(r.shape):
            return float('inf')
        worst = max(worst, (o.float() - r.float().cpu()).abs().max().item())
    return worst


def compare(model: nn.Module, run, shapes: Sequence[Sequence[int]], *, seed: int = 0) -> list[float]:
    """Max difference between ``run(x)`` and eager ``model(x)`` for one random image batch
    per ``[B, C, H, W]`` shape."""
    g = torch.Generator().manual_seed(seed)
    diffs = []
    model.eval()
    for shape in shapes:
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            ref = flatten_outputs(model(x))
            out = flatten_outputs(run(x))
        diffs.append(max_abs_diff(out, ref))
    return diffs
