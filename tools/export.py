"""Export the backbone + neck of a detection config, or the whole segmentor of a segmentation
config, to ONNX or ``torch.export`` with dynamic batch / height / width, and verify it.

    python tools/export.py CONFIG [CHECKPOINT] [--format onnx|torch-export] [--dynamo | --torchscript]
                           [--shape H W] [--batch B] [--static] [--out PATH] [--atol 1e-4]
                           [--cfg-options key=value ...] [--allow-partial-load] [--debug]

The file is checked against eager PyTorch (onnxruntime for ONNX, the program's module for
``torch.export``) at the export size and at two sizes it never saw (not multiples of the patch
or window; batch 1 and 2 with ``--dynamic``), and the max difference of each is printed; above
``--atol`` the tool exits 1 (the file stays, for inspection). Without CHECKPOINT the weights are
the config's random initialisation (said on the first line). What of a detector is exported and
what is not: ``ropevit/mm/deploy.py``. Bad input (a config, checkpoint, size or output path that
does not fit) is one line and exit 2, before anything is written.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
import warnings
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _common import (OneLineArgumentParser, PartialFailure, ToolError, add_common_args,  # noqa: E402
                     check_checkpoint_file, check_output_path, load_config, run_tool)

FORMATS = ('onnx', 'torch-export')
SUFFIX = {'onnx': '.onnx', 'torch-export': '.pt2'}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description='Export a RoPE backbone + neck (detection) or segmentor to ONNX / '
                                          'torch.export and verify it against PyTorch')
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', help='weights (.pth from tools/train.py); default: random init')
    p.add_argument('--format', choices=FORMATS, default='onnx')
    exp = p.add_mutually_exclusive_group()
    exp.add_argument('--dynamo', dest='exporter', action='store_const', const='dynamo',
                     help='ONNX through torch.export (default)')
    exp.add_argument('--torchscript', dest='exporter', action='store_const', const='torchscript',
                     help='ONNX through TorchScript tracing (dynamic_axes), as mmdeploy does')
    p.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'), default=(512, 512),
                   help='example input size the export traces (default 512 512)')
    p.add_argument('--batch', type=int, default=1, help='example batch size (default 1)')
    dyn = p.add_mutually_exclusive_group()
    dyn.add_argument('--dynamic', dest='dynamic', action='store_true', default=True,
                     help='dynamic batch, height and width (default)')
    dyn.add_argument('--static', dest='dynamic', action='store_false',
                     help='one fixed input size: size-dependent tensors (RoPE tables, masks) become constants')
    p.add_argument('--out', help='output file (default work_dirs/export/<config name>.onnx|.pt2)')
    p.add_argument('--atol', type=float, default=1e-4, help='largest accepted |exported - eager| (default 1e-4)')
    p.add_argument('--device', default='cpu')
    add_common_args(p, launcher=False)
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.exporter is not None and args.format != 'onnx':
        raise ToolError(f'--{args.exporter} chooses the ONNX exporter; it does not apply to --format {args.format}')
    args.exporter = args.exporter or 'dynamo'
    h, w = args.shape
    if h < 32 or w < 32:
        raise ToolError(f'--shape {h} {w}: both sides must be >= 32 pixels (a stride-32 feature map needs one cell)')
    if args.batch < 1:
        raise ToolError(f'--batch {args.batch}: must be >= 1')
    if not args.atol > 0:
        raise ToolError(f'--atol {args.atol}: must be > 0')
    if args.out is None:
        stem = osp.splitext(osp.basename(args.config))[0]
        args.out = osp.join('work_dirs', 'export', stem + SUFFIX[args.format])
    if osp.isdir(args.out):
        raise ToolError(f'--out {args.out!r} is a folder; give a file path ending in {SUFFIX[args.format]}')
    check_output_path(args.out, [args.config, args.checkpoint], what='export')


def verify_shapes(shape: Sequence[int], batch: int, dynamic: bool) -> list[tuple[int, int, int, int]]:
    """The export size, then two unseen ones: odd sizes, not multiples of 16 or 32, non-square
    (batch 1 and 2 when the batch is dynamic)."""
    h, w = shape
    first = (batch, 3, h, w)
    if not dynamic:
        return [first]
    return [first, (1, 3, h * 3 // 4 + 7, w + 21), (2, 3, h + 45, w * 2 // 3 + 5)]


def build(cfg, checkpoint: Optional[str], allow_partial: bool, device: str):
    """The config's model in eval mode, with the checkpoint loaded strictly (or random weights)."""
    from mmengine.registry import init_default_scope
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model_cfg = cfg.model
    if checkpoint is not None and model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None          # the checkpoint carries the backbone too
    if model_cfg.get('backbone', {}).get('with_cp'):
        model_cfg.backbone.with_cp = False          # activation checkpointing is a training setting
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        from ropevit.checkpoint.common import unwrap_state_dict
        from ropevit.checkpoint.io import load_checkpoint_file
        from ropevit.mm.strict_load import _REVISE_KEYS, _revise, check_model_state_dict
        state = _revise(unwrap_state_dict(load_checkpoint_file(checkpoint, map_location='cpu')), _REVISE_KEYS)
        check_model_state_dict(model, state, source=checkpoint, allow_partial=allow_partial)
        model.load_state_dict(state, strict=False)
    return model.to(device).eval(), scope


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    check_args(args)
    if args.checkpoint is not None:
        check_checkpoint_file(args.checkpoint)
    cfg = load_config(args.config, args.cfg_options, None)
    import torch

    from ropevit.deploy import compare, export_onnx, export_program, onnx_session, run_onnx
    from ropevit.fileio import atomic_target
    from ropevit.mm.deploy import NOT_EXPORTED, exportable_part

    model, scope = build(cfg, args.checkpoint, args.allow_partial_load, args.device)
    module, part = exportable_part(model, scope)
    weights = args.checkpoint or 'random weights (no CHECKPOINT given)'
    how = args.format if args.format == 'torch-export' else f'onnx ({args.exporter})'
    print(f'exporting the {part} of {args.config} with {weights} as {how}, '
          f'{"dynamic batch/H/W" if args.dynamic else "static size"}, example {args.batch}x3x{args.shape[0]}x'
          f'{args.shape[1]}; {NOT_EXPORTED[part]}', flush=True)
    g = torch.Generator().manual_seed(0)
    example = torch.randn(args.batch, 3, *args.shape, generator=g).to(args.device)
    t0 = time.perf_counter()
    with atomic_target(args.out) as tmp:
        if args.format == 'onnx':
            export_onnx(module, example, tmp, exporter=args.exporter, dynamic=args.dynamic)
        else:
            program = export_program(module, example, dynamic=args.dynamic)
            torch.export.save(program, tmp)
    seconds = time.perf_counter() - t0
    if args.format == 'onnx':
        session = onnx_session(args.out)
        run = lambda x: run_onnx(session, x)      # noqa: E731
    else:
        loaded = torch.export.load(args.out).module()
        run = lambda x: loaded(x)                 # noqa: E731
    shapes = verify_shapes(args.shape, args.batch, args.dynamic)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        diffs = compare(module.cpu(), run, shapes)
    print(f'wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB) in {seconds:.1f} s')
    print(f'{"input":>18}  max |exported - eager|')
    for s, d in zip(shapes, diffs):
        print(f'{"x".join(map(str, s)):>18}  {d:.3g}')
    worst = max(diffs)
    result = dict(out=args.out, part=part, diffs=dict(zip(map(tuple, shapes), diffs)), seconds=seconds)
    if not worst <= args.atol:
        raise PartialFailure(f'the exported {part} differs from eager PyTorch by {worst:.3g} > --atol {args.atol} '
                        f'(the file is kept at {args.out} for inspection)')
    print(f'verified: max difference {worst:.3g} <= {args.atol}')
    return result


if __name__ == '__main__':
    sys.exit(run_tool(main))
