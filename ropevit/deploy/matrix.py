"""Every backbone variant x every exporter, checked against eager at sizes the export never saw.

    python -m ropevit.deploy.matrix [--variants a,b] [--exporters torch-export,dynamo,torchscript]

Small random-weight models (LayerScale set to 0.5 so every block counts), exported at one
size with dynamic batch / H / W and run at :data:`CHECK_SHAPES`: non-square, not multiples
of the patch (16 / 4) or the window, batch 1 and 2. Prints one line per variant and exporter
with the max ``|exported - eager|`` and the export time, then the table docs/DEPLOY.md quotes.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .export import compare, export_onnx, export_program, onnx_session, run_onnx

#: exported at (B, C, H, W); checked at CHECK_SHAPES, none of which it saw.
EXPORT_SHAPE = (2, 3, 64, 96)
CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 50, 77), (2, 3, 37, 45), (1, 3, 33, 130))
ALL_EXPORTERS = ('torch-export', 'dynamo', 'torchscript')


def _layer_scale(model: nn.Module, value: float = 0.5) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'gamma' in name:
                p.fill_(value)
    return model.eval()


def tiny_vit(**kw) -> nn.Module:
    from ropevit.models.vit import RoPEViT
    torch.manual_seed(0)
    kw.setdefault('out_indices', (1, 2))
    return _layer_scale(RoPEViT(arch=dict(embed_dims=64, num_heads=4, depth=3), pretrain_img_size=64, **kw))


def tiny_vit_preset(preset: str, **kw) -> nn.Module:
    """A tiny ViT of a family of :data:`~ropevit.models.vit.VIT_PRESETS` (prefix tokens beside windows)."""
    from ropevit.models.vit import RoPEViT
    torch.manual_seed(0)
    kw.setdefault('out_indices', (1, 2))
    arch = dict(embed_dims=64, num_heads=4, depth=3)
    return _layer_scale(RoPEViT.from_preset(preset, arch=arch, patch_size=16, pretrain_img_size=64, **kw))


def tiny_swin(**kw) -> nn.Module:
    from ropevit.models.swin import RoPESwin
    torch.manual_seed(0)
    kw.setdefault('drop_path_rate', 0.0)
    return RoPESwin(embed_dims=16, depths=(2, 2), num_heads=(2, 4), window_size=4, out_indices=(0, 1),
                    **kw).eval()


def tiny_vitdet_fpn() -> nn.Module:
    from ropevit.necks.simple_fpn import SimpleFPN
    torch.manual_seed(0)
    return nn.Sequential(tiny_vit(rope='mixed', window_size=3, global_attn_indexes=(2,), with_cls_token=False,
                                  out_indices=(-1,)),
                         SimpleFPN(64, 32, num_outs=5)).eval()


#: name -> builder. ViT: rope x APE x window/global x class token; Swin: rope x bias x rule.
VARIANTS: dict[str, Callable[[], nn.Module]] = {
    'vit-axial-global-cls': lambda: tiny_vit(rope='axial'),
    'vit-mixed-global-cls-ape': lambda: tiny_vit(rope='mixed', use_ape=True),
    'vit-mixed-window': lambda: tiny_vit(rope='mixed', window_size=4, global_attn_indexes=(1,),
                                         with_cls_token=False),
    'vit-axial-window-ape': lambda: tiny_vit(rope='axial', use_ape=True, window_size=3, global_attn_indexes=(2,),
                                             with_cls_token=False),
    'vit-none-global-ape-cls': lambda: tiny_vit(rope='none', use_ape=True),
    # class token + 4 registers beside window blocks, normalised coordinates (DINOv3); SwiGLU, APE and
    # interpolated coordinates with a class token beside windows (EVA-02)
    'vit-dinov3-window': lambda: tiny_vit_preset('dinov3', window_size=3, global_attn_indexes=(1,)),
    'vit-eva02-window': lambda: tiny_vit_preset('eva02', window_size=3, global_attn_indexes=(2,)),
    'swin-mixed': lambda: tiny_swin(rope='mixed'),
    'swin-axial-rpb-original': lambda: tiny_swin(rope='axial', use_rpb=True, window_rule='original'),
    'swin-mixed-original': lambda: tiny_swin(rope='mixed', window_rule='original'),
    'swin-none-rpb': lambda: tiny_swin(rope='none', use_rpb=True),
    'vitdet+simplefpn': tiny_vitdet_fpn,
}


def export_and_compare(model: nn.Module, exporter: str, *, folder: str,
                       shapes: Sequence[Sequence[int]] = CHECK_SHAPES,
                       export_shape: Sequence[int] = EXPORT_SHAPE) -> tuple[list[float], float]:
    """Export ``model`` with ``exporter`` (``torch-export | dynamo | torchscript``), run the
    result at ``shapes``; returns (max diffs vs eager, export seconds)."""
    example = torch.randn(*export_shape, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if exporter == 'torch-export':
            run = export_program(model, example).module()
        elif exporter in ('dynamo', 'torchscript'):
            path = os.path.join(folder, f'{exporter}-{id(model)}.onnx')
            export_onnx(model, example, path, exporter=exporter)
            session = onnx_session(path)
            run = lambda x: run_onnx(session, x)       # noqa: E731
        else:
            raise ValueError(f'exporter={exporter!r}; allowed: {ALL_EXPORTERS}')
    seconds = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return compare(model, run, shapes), seconds


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--variants', default=','.join(VARIANTS))
    p.add_argument('--exporters', default=','.join(ALL_EXPORTERS))
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(',') if v]
    exporters = [e for e in args.exporters.split(',') if e]
    bad = [v for v in variants if v not in VARIANTS] + [e for e in exporters if e not in ALL_EXPORTERS]
    if bad:
        p.error(f'unknown {bad}; variants: {list(VARIANTS)}, exporters: {list(ALL_EXPORTERS)}')
    rows = []
    with tempfile.TemporaryDirectory(prefix='ropevit_matrix_') as folder:
        for name in variants:
            for exporter in exporters:
                try:
                    diffs, seconds = export_and_compare(VARIANTS[name](), exporter, folder=folder)
                    cell = f'{max(diffs):.1e}'
                except Exception as e:  # noqa: BLE001  (a failed cell is reported, the rest still runs)
                    cell, seconds = f'fails: {type(e).__name__}: {str(e).splitlines()[0][:120]}', float('nan')
                rows.append((name, exporter, cell, seconds))
                print(f'{name:26s} {exporter:13s} max |diff| {cell}  (export {seconds:.1f} s)', flush=True)
    print('\n| variant | ' + ' | '.join(exporters) + ' |')
    print('|---|' + '---|' * len(exporters))
    for name in variants:
        cells = [c for n, _, c, _ in rows if n == name]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    shapes = ', '.join('x'.join(map(str, s)) for s in CHECK_SHAPES)
    print(f'\nexported at {"x".join(map(str, EXPORT_SHAPE))}; max over {shapes}')
    return 0 if all(not c.startswith('fails') for _, _, c, _ in rows) else 1


if __name__ == '__main__':
    raise SystemExit(main())
