"""Evaluate a checkpoint of a detector (mmdet) or segmentor (mmseg) config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--tta]
                         [--out results.pkl] [--cfg-options ...] [--launcher ...]
                         [--allow-partial-load] [--skip-data-check] [--debug]

The checkpoint must fit the config's model (every key and shape; ``--allow-partial-load`` to accept
one that does not, with a warning naming the keys). Bad input is one line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from _common import (OneLineArgumentParser, ToolError, add_common_args, add_reliability_hooks, add_strict_load_hook,
                     build_runner, check_checkpoint_file, check_data_or_exit, check_launcher, check_output_path,
                     read_config, register_modules, run_explaining_data_errors, run_tool, setup_local_rank, exit_tool)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description='Test (and evaluate) a RoPE detector or segmentor')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--work-dir')
    p.add_argument('--out', help='dump raw predictions to this .pkl file (written atomically)')
    p.add_argument('--show-dir', help='write images with predictions drawn on them under work_dir/<timestamp>/DIR')
    p.add_argument('--tta', action='store_true', help='multi-scale + flip test-time augmentation '
                   '(the config must include configs/_base_/tta_seg.py or tta_det.py)')
    p.add_argument('--skip-data-check', action='store_true',
                   help='do not compare the data with its annotation files before testing')
    add_common_args(p)
    return p.parse_args(argv)


def _enable_visualization(cfg, show_dir: str) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ToolError('--show-dir: the config has no default_hooks.visualization')
    hook.draw = True
    hook.show = False
    if cfg.default_scope == 'mmdet':
        hook.test_out_dir = show_dir
    else:
        hook.interval = 1
        cfg.visualizer.save_dir = show_dir
        cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]


def _atomic_dump_results(out: str):
    """MMEngine's DumpResults, writing the pickle through a temporary sibling + rename."""
    import pickle

    from mmengine.evaluator import DumpResults
    from mmengine.evaluator.metric import _to_cpu
    from mmengine.logging import print_log

    from ropevit.fileio import atomic_write

    class AtomicDumpResults(DumpResults):
        def compute_metrics(self, results: list) -> dict:
            with atomic_write(self.out_file_path, 'wb') as f:
                pickle.dump(_to_cpu(results), f)
            print_log(f'Results has been saved to {self.out_file_path}.', logger='current')
            return {}

    return AtomicDumpResults(out_file_path=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_launcher(args.launcher)
    setup_local_rank(args.local_rank)
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise ToolError(f'--out {args.out!r}: the predictions are written as a pickle; give a .pkl file name')
    check_output_path(args.out, [args.config, args.checkpoint], what='--out')
    cfg = read_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher
    if args.show_dir:
        _enable_visualization(cfg, args.show_dir)
    which = ('test_dataloader',)
    check_data_or_exit(cfg, which=which, annotations=not args.skip_data_check)
    check_checkpoint_file(args.checkpoint)
    cfg.load_from, cfg.resume = args.checkpoint, False
    register_modules(cfg, args.config)   # torch, mmdet/mmseg, ropevit.mm: only once the input is checked
    if args.tta:
        from ropevit.mm.tta import apply_tta
        cfg = apply_tta(cfg)
    add_strict_load_hook(cfg, allow_partial=args.allow_partial_load)
    add_reliability_hooks(cfg)   # AtomicCheckpointHook, RNGStateHook (docs/RELIABILITY.md), if the config lacks them
    runner = build_runner(cfg, args.config)
    if args.out:
        runner.test_evaluator.metrics.append(_atomic_dump_results(args.out))
    run_explaining_data_errors(runner.test, cfg, which=which)
    return 0


if __name__ == '__main__':
    exit_tool(run_tool(main))   # a distributed run leaves its process group before exiting
