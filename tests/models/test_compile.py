"""``torch.compile`` of the backbones: Dynamo traces each forward as one graph (no graph
break, no recompile when called again), the AOT-traced forward and backward equal eager's,
and Inductor's compiled RoPESwin and RoPEViT (global attention with class token and APE;
ViTDet windows with padding plus a global block) give eager's outputs, at a second input
size too. After the one dynamic-shape recompile Dynamo makes for a second size, RoPEViT
takes further sizes without recompiling.

RoPESwin used to break the graph inside its stage loop (the window-RoPE cache asked
``torch.is_inference_mode_enabled()``), which made Dynamo give up on the whole backbone
and compile stage fragments instead: minutes of compilation and, in Inductor's
joint-graph pass, a "topological sort did not consume all nodes" failure.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend
from torch._dynamo.utils import counters

from ropevit.models.swin import RoPESwin
from ropevit.models.vit import RoPEViT

TINY_SWIN = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
TINY_VIT = dict(embed_dims=32, depth=3, num_heads=2)
# 60x92: every Swin stage's grid needs window padding (15x23, 8x12, 4x6, 2x3 with ws=4),
# the last one is smaller than a window, and ViT's 16-pixel patches see a 3x5 grid.
SIZE = (60, 92)

MODELS: dict[str, Callable[[], nn.Module]] = {
    'swin-mixed': lambda: RoPESwin(arch=TINY_SWIN, rope='mixed', window_size=4, drop_path_rate=0.0,
                                   out_indices=(0, 1, 2, 3)),
    'swin-axial': lambda: RoPESwin(arch=TINY_SWIN, rope='axial', window_size=4, drop_path_rate=0.0,
                                   out_indices=(0, 1, 2, 3)),
    'swin-none-rpb': lambda: RoPESwin(arch=TINY_SWIN, rope='none', use_rpb=True, window_size=4,
                                      drop_path_rate=0.0, out_indices=(0, 1, 2, 3)),
    'vit-mixed': lambda: RoPEViT(arch=TINY_VIT, rope='mixed', layer_scale_init_value=1.0, out_indices=(1, 2)),
    'vit-axial-windowed': lambda: RoPEViT(arch=TINY_VIT, rope='axial', window_size=2, global_attn_indexes=(1,),
                                          with_cls_token=False, layer_scale_init_value=1.0),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(1))


def _loss(outs) -> torch.Tensor:
    return sum((o.float() ** 2).mean() for o in outs)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# Swin's forward is the same code with and without grad; its tracing is the slow one.
@pytest.mark.parametrize('name, grad', [(n, True) for n in MODELS] + [(n, False) for n in MODELS if 'vit' in n])
def test_forward_is_one_graph_and_is_not_recompiled(name, grad):
    model = _model(name).train(grad)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    x = _input()
    with torch.set_grad_enabled(grad):
        compiled(x)
        compiled(x)                   # the window/grid caches must not trigger a recompile
    assert counter.frame_count == 1, f'{name}: {counter.frame_count} graphs (graph breaks or recompiles)'
    assert counter.op_count > 0


@pytest.mark.parametrize('name', ['swin-mixed', 'vit-mixed', 'vit-axial-windowed'])
def test_aot_traced_forward_and_backward_equal_eager(name):
    model = _model(name)
    x = _input()
    ref = model(x)
    _loss(ref).backward()
    ref_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    got = torch.compile(model, backend='aot_eager')(x)
    _loss(got).backward()
    got_grads = _grads(model)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    assert set(got_grads) == set(ref_grads)
    rope_params = [n for n in ref_grads if 'rope' in n or n.endswith('freqs')]
    assert ('mixed' not in name) or rope_params, 'mixed RoPE frequencies must receive gradients'
    for n, r in ref_grads.items():
        torch.testing.assert_close(got_grads[n], r, atol=1e-6 + 1e-4 * r.abs().max().item(), rtol=1e-4,
                                   msg=lambda m, n=n: f'{name} grad of {n}: {m}')


def test_inductor_swin_equals_eager():
    # One stage (a shifted block, padded windows, per-block mixed tables) keeps Inductor's
    # C++ build short; the multi-stage trace is covered by the tests above.
    model = RoPESwin(arch=dict(embed_dims=16, depths=(2,), num_heads=(2,)), rope='mixed', window_size=4,
                     drop_path_rate=0.0, out_indices=(0,)).eval()
    x = _input(batch=1)
    with torch.no_grad():
        ref = model(x)
        got = torch.compile(model)(x)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


# Inductor on RoPEViT. Each static Inductor compile costs ~25-40 s of C++ build on 2 busy cores
# (cold cache), so three: G at two sizes, W at one. A dynamic-shape Inductor compile of W took
# over 6 minutes here, so the dynamic recompile is checked by tracing alone (test below).
# G: global attention, class token (identity rows in the RoPE tables), APE resized bicubically
# from a 4x4 to the actual grid, learnable RoPE-Mixed tables built inside the graph.
# W: ViTDet windows of 3x3 patches over a 5x7 grid (padded to 6x9, padding keys masked) and one
# global block, fixed RoPE-Axial tables, no class token or APE.
INDUCTOR_VITS: dict[str, dict] = {
    'global-mixed-cls-ape': dict(arch=dict(embed_dims=64, num_heads=2, depth=2), patch_size=8,
                                 pretrain_img_size=32, rope='mixed', use_ape=True, with_cls_token=True,
                                 layer_scale_init_value=1.0, out_indices=(0, 1)),
    'windowed-axial': dict(arch=dict(embed_dims=64, num_heads=2, depth=2), patch_size=8, rope='axial',
                           window_size=3, global_attn_indexes=(1,), with_cls_token=False,
                           layer_scale_init_value=1.0, out_indices=(0, 1)),
}
# 40x52 px: 52 is not a multiple of the 8-px patch (zero-padded to 56): a 5x7 grid.
# 60x36 px: the other side padded (64x40 px): an 8x5 grid, another APE resize.
SIZES_VIT = {'global-mixed-cls-ape': [(40, 52), (60, 36)], 'windowed-axial': [(40, 52)]}


def _assert_close_to_eager(got, ref, what: str) -> None:
    # Inductor fuses and reorders float32 reductions (LayerNorm, softmax, the RoPE rotation written
    # in real arithmetic): measured max |compiled - eager| / max |eager| = 1.1e-7 .. 2.4e-7, a few
    # float32 ulps. 1e-5 of the output's scale is 40x that, and far below what a wrong rotation,
    # mask or resize changes (order 1e-1).
    assert len(got) == len(ref), what
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype, what
        scale = r.abs().max().item()
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f'{what}: {m}')


@pytest.mark.parametrize('name', list(INDUCTOR_VITS))
def test_inductor_vit_equals_eager_in_one_graph(name):
    torch.manual_seed(0)
    model = RoPEViT(**INDUCTOR_VITS[name]).eval()
    counter = CompileCounterWithBackend('inductor')
    # dynamic=False: a second size is compiled statically (see the budget note above).
    compiled = torch.compile(model, backend=counter, dynamic=False)
    counters.clear()
    sizes = SIZES_VIT[name]
    for k, size in enumerate(sizes, start=1):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(k))
        with torch.no_grad():
            ref = model(x)
            got = compiled(x)
            assert counter.frame_count == k, f'{name} {size}: {counter.frame_count} graphs for {k} size(s)'
            again = compiled(x)                  # same size: no recompile
        assert counter.frame_count == k, f'{name} {size}: recompiled on the second call'
        _assert_close_to_eager(got, ref, f'{name} {size}')
        _assert_close_to_eager(again, ref, f'{name} {size}, second call')
    assert not counters['graph_break'], dict(counters['graph_break'])
    if len(sizes) > 1:                           # the first size's graph is still used
        x = torch.randn(2, 3, *sizes[0], generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            _assert_close_to_eager(compiled(x), model(x), f'{name} {sizes[0]} again')
        assert counter.frame_count == len(sizes)


def test_vit_dynamic_recompile_serves_every_later_size():
    """Default ``torch.compile`` of windowed RoPEViT: static graph at the first size, one
    dynamic-shape graph at the second, and no further recompile at later sizes that take the same
    branches (grids 8x5, 4x11, 7x8: both sides need window padding, the height patch padding).
    RoPEViT once grouped its blocks' RoPE tables in a dict keyed by the grid size, next to the
    window grid's key: Dynamo then specialised the dynamic graph on the height and recompiled for
    every size (after 8 sizes it gives up and runs eager)."""
    torch.manual_seed(0)
    model = RoPEViT(**INDUCTOR_VITS['windowed-axial']).eval()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    with torch.no_grad():
        for size, graphs in (((40, 52), 1), ((60, 36), 2), ((28, 84), 2), ((52, 60), 2)):
            x = torch.randn(1, 3, *size)
            _assert_close_to_eager(compiled(x), model(x), f'{size}')
            assert counter.frame_count == graphs, f'{size}: {counter.frame_count} graphs, expected {graphs}'
