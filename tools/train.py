"""Train a detector (mmdet) or segmentor (mmseg) from a config.

    python tools/train.py configs/mask_rcnn_rope_swin_t.py [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cfg-options key=value ...] [--launcher none|pytorch|slurm|mpi]

Several GPUs / nodes: tools/dist_train.sh (torchrun); Slurm: --launcher slurm under srun.
"""
from __future__ import annotations

import argparse

from _common import (build_runner, check_data_or_exit, load_config, run_explaining_data_errors,
                     setup_local_rank)
from mmengine.config import DictAction


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Train a RoPE detector or segmentor')
    p.add_argument('config', help='config file path')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from CKPT, or from the latest checkpoint in the work dir when no path is given')
    p.add_argument('--amp', action='store_true', help='mixed precision (fp16 on GPU, bf16 autocast on CPU)')
    p.add_argument('--auto-scale-lr', action='store_true', help='scale lr by the actual total batch size')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries: key=value')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    setup_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher

    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print('AMP is already enabled in the config')
        elif wrapper != 'OptimWrapper':
            raise SystemExit(f'--amp needs optim_wrapper.type "OptimWrapper", got {wrapper!r}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr: the config has no auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    check_data_or_exit(cfg, which=('train_dataloader', 'val_dataloader'))
    runner = build_runner(cfg)
    run_explaining_data_errors(runner.train, cfg, which=('train_dataloader', 'val_dataloader'))


if __name__ == '__main__':
    main()
