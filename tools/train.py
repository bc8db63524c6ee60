"""Train a detector (mmdet) or segmentor (mmseg) from a config.

    python tools/train.py configs/mask_rcnn_rope_swin_t.py [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cfg-options key=value ...] [--launcher none|pytorch|slurm|mpi]
                          [--allow-partial-load] [--skip-data-check] [--debug]

Several GPUs / nodes: tools/dist_train.sh (torchrun); Slurm: --launcher slurm under srun.
Bad input is one line (``error: ...``) and exit 2; ``--debug`` shows the traceback (docs/RELIABILITY.md).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from _common import (OneLineArgumentParser, ToolError, add_common_args, add_reliability_hooks, add_strict_load_hook,
                     build_runner, check_checkpoint_file, check_data_or_exit, check_launcher,
                     check_pretrained_values, log_warning, read_config, register_modules, resolve_resume,
                     run_explaining_data_errors, run_tool, setup_local_rank, exit_tool)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description='Train a RoPE detector or segmentor')
    p.add_argument('config', help='config file path')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in the work dir when no path is given')
    p.add_argument('--amp', action='store_true', help='mixed precision (fp16 on GPU, bf16 autocast on CPU)')
    p.add_argument('--auto-scale-lr', action='store_true', help='scale lr by the actual total batch size')
    p.add_argument('--skip-data-check', action='store_true',
                   help='do not compare the data with its annotation files before training')
    add_common_args(p)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    check_launcher(args.launcher)
    setup_local_rank(args.local_rank)
    cfg = read_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher

    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print('AMP is already enabled in the config')
        elif wrapper != 'OptimWrapper':
            raise ToolError(f'--amp needs optim_wrapper.type "OptimWrapper" in {args.config}, got {wrapper!r}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ToolError(f'--auto-scale-lr: {args.config} has no auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True

    warning = resolve_resume(cfg, args.resume)
    which = ('train_dataloader', 'val_dataloader')
    check_data_or_exit(cfg, which=which, annotations=not args.skip_data_check)
    check_pretrained_values(cfg, args.config, check_files=True)
    if cfg.get('load_from') and '://' not in str(cfg.load_from):
        check_checkpoint_file(str(cfg.load_from), 'load_from checkpoint')
    register_modules(cfg, args.config)   # torch, mmdet/mmseg, ropevit.mm: only once the input is checked
    add_strict_load_hook(cfg, allow_partial=args.allow_partial_load)
    add_reliability_hooks(cfg)   # AtomicCheckpointHook, RNGStateHook (docs/RELIABILITY.md), if the config lacks them
    runner = build_runner(cfg, args.config)
    if warning:
        log_warning(warning)
    run_explaining_data_errors(runner.train, cfg, which=which)
    return 0


if __name__ == '__main__':
    exit_tool(run_tool(main))   # a distributed run leaves its process group before exiting
