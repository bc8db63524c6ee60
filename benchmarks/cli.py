"""Benchmark ropevit's backbones against the implementations users would pick instead.

One process, one run: prints markdown tables and ratios (with the issue-7 targets), and
writes ``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` (time and peak memory
against input size) into ``--out``. Uses the GPU when there is one (``--device auto``).
Run from the repository root (``tools/benchmark.py`` forwards here):

Examples::

    python -m benchmarks --quick                       # CPU-friendly subset
    python -m benchmarks                               # everything (slow on a 2-core CPU)
    python -m benchmarks --suites vit_timm --archs small --sizes 224,512,384x640
    python -m benchmarks --suites windowed,scaling --dtypes fp32,bf16 --modes fwd,fwd+bwd
    python -m benchmarks --no-mmdet                    # machines without mmdet: skips the Swin comparison
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback

SUITES = ('vit_timm', 'windowed', 'scaling', 'swin', 'compile', 'deploy')


def parse_size(text: str) -> tuple[int, int]:
    """``'512'`` -> (512, 512); ``'384x640'`` -> (384, 640) (height x width)."""
    parts = text.lower().split('x')
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f'size {text!r}: expected N or HxW (e.g. 512 or 800x1333)') from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 16:
        raise argparse.ArgumentTypeError(f'size {text!r}: expected N or HxW with sides >= 16')
    return vals[0], vals[1]


def _sizes(text: str) -> list[tuple[int, int]]:
    return [parse_size(t) for t in text.split(',') if t]


def _list(text: str) -> list[str]:
    return [t for t in text.split(',') if t]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--suites', type=_list, default=['vit_timm', 'windowed', 'scaling', 'swin', 'deploy'],
                   help=f'comma list from {",".join(SUITES)} (compile only with --compile or named here)')
    p.add_argument('--smoke', action='store_true',
                   help='tiny models and images: checks the whole harness in seconds (numbers mean nothing)')
    p.add_argument('--quick', action='store_true',
                   help='CPU-friendly subset: ViT-S, 224 and 384x640, windowed ViT-B at 1024 fwd, '
                        'scaling 512/768/1024 window models only, Swin-T 224 and 800x1333, fp32, 3 reps')
    p.add_argument('--archs', type=_list, default=['small', 'base'], help='RoPEViT vs timm: small,base,large')
    p.add_argument('--ropes', type=_list, default=['mixed', 'axial', 'none'])
    p.add_argument('--sizes', type=_sizes, default=[(224, 224), (512, 512), (384, 640)],
                   help='RoPEViT vs timm sizes, N or HxW, comma separated')
    p.add_argument('--windowed-arch', default='base')
    p.add_argument('--windowed-sizes', type=_sizes, default=[(1024, 1024)])
    p.add_argument('--window-size', type=int, default=14)
    p.add_argument('--global-blocks', type=lambda t: tuple(int(v) for v in t.split(',') if v), default=None,
                   help='global blocks of the windowed model (default: ViTDet, last block of each quarter)')
    p.add_argument('--no-global-manual', action='store_true',
                   help='skip the all-global manual-softmax contender (large N x N matrices)')
    p.add_argument('--scaling-sizes', type=lambda t: [int(v) for v in t.split(',')],
                   default=[512, 640, 768, 896, 1024])
    p.add_argument('--scaling-all-global', action=argparse.BooleanOptionalAction, default=True,
                   help='include the all-global model in the cost-vs-pixels curve')
    p.add_argument('--swin-sizes', type=_sizes, default=[(224, 224), (800, 1333)])
    p.add_argument('--no-mmdet', action='store_true',
                   help='no mmdet here: compare RoPESwin with ropevit\'s plain Swin running mmdet\'s manual-softmax '
                        'math instead of mmdet\'s SwinTransformer')
    p.add_argument('--compile', action='store_true', help='also run the torch.compile check')
    p.add_argument('--compile-model', choices=('vit', 'vitdet', 'swin'), default='vit',
                   help='backbone of the torch.compile check: RoPEViT, windowed RoPEViT (ViTDet) or RoPESwin '
                        '(Swin-T unless --smoke)')
    p.add_argument('--compile-vitdet', action='store_true', help='same as --compile-model vitdet')
    p.add_argument('--compile-rope', choices=('mixed', 'axial', 'none'), default='mixed')
    p.add_argument('--compile-arch', default=None, help='ViT preset for --compile-model vit/vitdet (default small)')
    p.add_argument('--compile-size', type=parse_size, default=(224, 224))
    p.add_argument('--deploy-vit-size', type=parse_size, default=(1024, 1024),
                   help='deploy suite: windowed RoPEViT-B timed at this size (onnxruntime vs eager)')
    p.add_argument('--deploy-swin-size', type=parse_size, default=(800, 1333),
                   help='deploy suite: RoPESwin-T timed at this size')
    p.add_argument('--deploy-exporter', choices=('dynamo', 'torchscript'), default='dynamo',
                   help='deploy suite: the ONNX exporter')
    p.add_argument('--modes', type=_list, default=['fwd', 'fwd+bwd'], help='fwd,fwd+bwd')
    p.add_argument('--dtypes', type=_list, default=['fp32', 'bf16'], help='fp32,bf16 (bf16 = autocast)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--reps', type=int, default=5,
                   help='timing rounds per contender, interleaved (each one torch.utils.benchmark '
                        'Timer.blocked_autorange)')
    p.add_argument('--min-run-time', type=float, default=0.0,
                   help='seconds each round runs at least (more, shorter blocks for fast calls); '
                        '0: one block per round')
    p.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: all visible cores)')
    p.add_argument('--device', default='auto', help='auto | cpu | cuda')
    p.add_argument('--no-memory', action='store_true', help='skip peak-memory measurements')
    p.add_argument('--tf32', action='store_true', help='allow TF32 matmuls on CUDA (off by default: true fp32)')
    p.add_argument('--out', default='benchmarks/results', help='folder for benchmark.{md,json,png}')
    p.add_argument('--replot', metavar='JSON', default=None,
                   help='only redraw benchmark.png (and benchmark.md) next to an existing benchmark.json')
    p.add_argument('--keep-going', action='store_true',
                   help='report a suite that fails (other than a parity failure) and go on')
    return p


def apply_quick(args: argparse.Namespace, given: set[str]) -> None:
    """--quick presets, for options the user did not set explicitly."""
    preset = dict(archs=['small'], sizes=[(224, 224), (384, 640)], windowed_sizes=[(1024, 1024)],
                  scaling_sizes=[512, 768, 1024], scaling_all_global=False, swin_sizes=[(224, 224), (800, 1333)],
                  modes=['fwd'], dtypes=['fp32'], reps=3, warmup=1)
    for k, v in preset.items():
        if k not in given:
            setattr(args, k, v)


#: --smoke: tiny models (head dim 32) and images, every suite and mode.
SMOKE_VIT = dict(embed_dims=64, depth=4, num_heads=2)
SMOKE_SWIN = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


def apply_smoke(args: argparse.Namespace, given: set[str]) -> None:
    preset = dict(archs=[SMOKE_VIT], sizes=[(64, 64), (48, 80)], windowed_arch=SMOKE_VIT,
                  windowed_sizes=[(128, 128)], window_size=4, global_blocks=(1, 3), scaling_sizes=[64, 128],
                  swin_arch=SMOKE_SWIN, swin_sizes=[(64, 64), (64, 96)], compile_arch=SMOKE_VIT,
                  compile_size=(64, 64), deploy_vit_size=(80, 112), deploy_swin_size=(96, 136), modes=['fwd', 'fwd+bwd'], dtypes=['fp32'], reps=1, warmup=0)
    for k, v in preset.items():
        if k not in given:
            setattr(args, k, v)


def write_outputs(results, header: dict, out: str) -> str:
    """Write ``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` into ``out``; return the markdown."""
    from benchmarks import report
    from ropevit.fileio import atomic_target, atomic_write
    os.makedirs(out, exist_ok=True)
    with atomic_target(os.path.join(out, 'benchmark.png')) as tmp:   # every file: temp sibling + rename
        report.plot(results, tmp,
                    title=f'ropevit benchmark on {header.get("gpu", header["cpu"])} ({header["device"]}, '
                          f'{header["threads"]})')
    md = results.markdown(header)
    with atomic_write(os.path.join(out, 'benchmark.md'), 'w') as f:
        f.write(md + '\n')
    with atomic_write(os.path.join(out, 'benchmark.json'), 'w') as f:
        f.write(results.to_json(header))
    return md


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv_list = sys.argv[1:] if argv is None else argv
    given = {a.lstrip('-').split('=')[0].replace('-', '_') for a in argv_list if a.startswith('--')}
    if args.replot:
        from benchmarks import report
        results, header = report.load_json(args.replot)
        write_outputs(results, header, os.path.dirname(os.path.abspath(args.replot)))
        return 0
    args.swin_arch = None
    if args.smoke:
        apply_smoke(args, given)
    elif args.quick:
        apply_quick(args, given)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f'--suites: unknown {unknown}; choose from {SUITES}')
    if args.compile and 'compile' not in args.suites:
        args.suites.append('compile')
    compile_model = 'vitdet' if args.compile_vitdet else args.compile_model
    # RoPESwin is compiled with the Swin suite's arch (Swin-T; the tiny one under --smoke).
    compile_arch = args.swin_arch if compile_model == 'swin' else args.compile_arch

    import torch
    from benchmarks import measure, report, suites
    from benchmarks.measure import ParityError
    from benchmarks.runner import BenchConfig

    if args.device == 'auto':
        device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    else:
        device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())
    measure.pin_threads(threads)
    cfg = BenchConfig(device=device, dtypes=args.dtypes, modes=args.modes, warmup=args.warmup, reps=args.reps,
                      min_run_time=args.min_run_time, batch=args.batch, memory=not args.no_memory,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    header = measure.describe_environment(device)
    header.update({'batch': str(args.batch), 'dtypes': ', '.join(args.dtypes) + ' (bf16 = torch.autocast)',
                   'timing': f'torch.utils.benchmark.Timer: {args.warmup} warm-up calls, then {args.reps} rounds '
                             f'of blocked_autorange(min_run_time={args.min_run_time:g}) per contender, '
                             'interleaved; median (inter-quartile range) over the timed blocks',
                   'peak memory': 'extra tensor memory at the peak of one call above what was allocated before '
                                  '(CUDA: max_memory_allocated; CPU: torch.profiler memory timeline)',
                   'command': 'python -m benchmarks ' + ' '.join(argv_list)})
    results = report.Results()
    use_mmdet = not args.no_mmdet
    if use_mmdet and 'swin' in args.suites and importlib.util.find_spec('mmdet') is None:
        use_mmdet = False
        results.notes.append('mmdet is not installed: Swin is compared with the mmdet-math reference')
    t_start = time.perf_counter()
    plan = {
        'vit_timm': lambda: suites.vit_vs_timm(results, cfg, archs=args.archs, ropes=args.ropes, sizes=args.sizes),
        'windowed': lambda: suites.windowed_vit(results, cfg, arch=args.windowed_arch, window_size=args.window_size,
                                                global_blocks=args.global_blocks, sizes=args.windowed_sizes,
                                                global_manual=not args.no_global_manual),
        'scaling': lambda: suites.window_scaling(results, cfg, arch=args.windowed_arch,
                                                 window_size=args.window_size, global_blocks=args.global_blocks,
                                                 sizes=args.scaling_sizes, all_global=args.scaling_all_global),
        'swin': lambda: suites.swin_vs_mmdet(results, cfg, arch=args.swin_arch, sizes=args.swin_sizes,
                                             use_mmdet=use_mmdet),
        'compile': lambda: suites.compile_check(results, cfg, model=compile_model, arch=compile_arch,
                                                rope=args.compile_rope, size=args.compile_size,
                                                window_size=args.window_size, global_blocks=args.global_blocks),
        'deploy': lambda: suites.deploy_check(results, cfg, vit_arch=args.windowed_arch, vit_size=args.deploy_vit_size,
                                              window_size=args.window_size, global_blocks=args.global_blocks,
                                              swin_arch=args.swin_arch, swin_size=args.deploy_swin_size,
                                              exporter=args.deploy_exporter),
    }
    failed = []
    md = ''
    for name in SUITES:
        if name not in args.suites:
            continue
        print(f'== {name}', file=sys.stderr, flush=True)
        try:
            plan[name]()
        except ParityError:
            raise                      # outputs disagree: no numbers are worth printing
        except Exception as e:         # noqa: BLE001 - reported, then re-raised unless --keep-going
            if not args.keep_going:
                raise
            failed.append(name)
            results.notes.append(f'suite {name} failed: {type(e).__name__}: {e}')
            traceback.print_exc()
        header['wall time'] = f'{time.perf_counter() - t_start:.0f} s'
        md = write_outputs(results, header, args.out)     # after every suite: a killed run keeps what it measured
    print(md)
    print(f'\nwrote {args.out}/benchmark.md, benchmark.json, benchmark.png (if anything has two sizes)',
          file=sys.stderr)
    return 1 if failed else 0

