"""Evaluate a checkpoint of a detector (mmdet) or segmentor (mmseg) config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--tta]
                         [--out results.pkl] [--cfg-options ...] [--launcher ...]
"""
from __future__ import annotations

import argparse
import os.path as osp

from _common import (build_runner, check_data_or_exit, load_config, run_explaining_data_errors,
                     setup_local_rank)
from mmengine.config import DictAction


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Test (and evaluate) a RoPE detector or segmentor')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--work-dir')
    p.add_argument('--out', help='dump raw predictions to this .pkl file')
    p.add_argument('--show-dir', help='write images with predictions drawn on them under work_dir/<timestamp>/DIR')
    p.add_argument('--tta', action='store_true', help='multi-scale + flip test-time augmentation '
                   '(the config must include configs/_base_/tta_seg.py or tta_det.py)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return p.parse_args()


def _enable_visualization(cfg, show_dir: str) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise SystemExit('--show-dir: the config has no default_hooks.visualization')
    hook.draw = True
    hook.show = False
    if cfg.default_scope == 'mmdet':
        hook.test_out_dir = show_dir
    else:
        hook.interval = 1
        cfg.visualizer.save_dir = show_dir
        cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]


def main() -> None:
    args = parse_args()
    setup_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    if args.show_dir:
        _enable_visualization(cfg, args.show_dir)
    if args.tta:
        from ropevit.mm.tta import apply_tta
        cfg = apply_tta(cfg)
    check_data_or_exit(cfg, which=('test_dataloader',))
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    runner = build_runner(cfg)
    if args.out:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    run_explaining_data_errors(runner.test, cfg, which=('test_dataloader',))


if __name__ == '__main__':
    main()
