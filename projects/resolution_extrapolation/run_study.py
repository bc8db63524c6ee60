"""The study end to end: generate the data, train the four position-encoding variants with the same
budget, sweep the test scale, write the table and plot.

    python projects/resolution_extrapolation/run_study.py            # ~20 min on 2 CPU cores

Outputs: ``work_dirs/resolution_extrapolation/<variant>/`` (logs, checkpoints) and
``<out-dir>/results.{md,json,png}`` (default: this project folder).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import make_data  # noqa: E402
import sweep  # noqa: E402

VARIANTS = {  # column name -> config (only backbone.rope / use_ape differ)
    'APE': 'vit-tiny-p8_ape_fcn_extrapolation-ade-64.py',
    'RoPE-Axial': 'vit-tiny-p8_rope-axial_fcn_extrapolation-ade-64.py',
    'RoPE-Mixed': 'vit-tiny-p8_rope-mixed_fcn_extrapolation-ade-64.py',
    'RoPE-Mixed + APE': 'vit-tiny-p8_rope-mixed-ape_fcn_extrapolation-ade-64.py',
}


def train(config: str, work_dir: str, *, seed: int = 0) -> str:
    """Train with mmengine's Runner (what tools/train.py does); returns the last checkpoint."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    Runner.from_cfg(cfg).train()
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-root', default='data/extrapolation_ade')
    parser.add_argument('--work-dir', default='work_dirs/resolution_extrapolation')
    parser.add_argument('--out-dir', default=HERE)
    parser.add_argument('--scales', nargs='+', type=float, default=[0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    parser.add_argument('--seed', type=int, default=0, help='training seed (the same for all variants)')
    parser.add_argument('--skip-train', action='store_true', help='reuse the checkpoints in --work-dir')
    args = parser.parse_args()
    os.chdir(ROOT)                                                      # configs use data/... paths
    if not osp.isdir(osp.join(args.data_root, 'images', 'training')):
        make_data.make_dataset(args.data_root)
    specs = []
    for name, config in VARIANTS.items():
        work_dir = osp.join(args.work_dir, f'seed{args.seed}', config.split('_')[1])   # e.g. .../seed0/rope-mixed
        config = osp.join(HERE, 'configs', config)
        if args.skip_train:
            with open(osp.join(work_dir, 'last_checkpoint')) as f:
                checkpoint = f.read().strip()
        else:
            start = time.time()
            checkpoint = train(config, work_dir, seed=args.seed)
            print(f'trained {name} in {time.time() - start:.0f} s -> {checkpoint}')
        specs.append(sweep.ModelSpec(config, checkpoint, name))
    result = sweep.sweep(specs, args.scales, work_dir=osp.join(args.work_dir, f'seed{args.seed}', 'sweep'))
    paths = sweep.write_outputs(result, args.out_dir,
                                title=f'tiny ViT seg. trained at 64 px (seed {args.seed}): mIoU vs test scale')
    print(result.to_markdown())
    print('wrote ' + ', '.join(paths.values()))


if __name__ == '__main__':
    main()
