"""What the two demos (tools/demo.py: detection, tools/demo_seg.py: segmentation) share: the
command line, writing the generated data set, and training + testing the demo config on it."""
from __future__ import annotations

import argparse
import time
from typing import Callable

from _common import build_runner, load_config


def demo_parser(description: str, *, config: str, data_root: str, work_dir: str, num_train: int, num_val: int,
                num_draw: int) -> argparse.ArgumentParser:
    """The options both demos take (each adds its own to the returned parser)."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--config', default=config)
    p.add_argument('--data-root', default=data_root, help='generated on first use')
    p.add_argument('--work-dir', default=work_dir)
    p.add_argument('--seed', type=int, default=0, help='seed of the data set and of training')
    p.add_argument('--num-train', type=int, default=num_train)
    p.add_argument('--num-val', type=int, default=num_val)
    p.add_argument('--num-draw', type=int, default=num_draw, help='validation images drawn into predictions.png')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    return p


def make_data(args: argparse.Namespace, make: Callable[..., object], *, tag: str, layout: str = '') -> float:
    """Write the generated set (``make(root, num_train=, num_val=, seed=)``) on first use; return the start time."""
    start = time.time()
    make(args.data_root, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    print(f'[{tag}] data: {args.data_root} ({args.num_train} train / {args.num_val} val images, {layout}'
          f'{time.time() - start:.0f} s)', flush=True)
    return start


def train_and_test(args: argparse.Namespace, adapt: Callable[[object], None], *,
                   train: bool = True) -> tuple[object, dict, float]:
    """Load the demo config, let ``adapt(cfg)`` point it at the data, seed it, train (unless
    ``train`` is False) and test on the validation split; ``(runner, metrics, training seconds)``."""
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    adapt(cfg)
    cfg.randomness = dict(seed=args.seed)
    runner = build_runner(cfg)
    t0 = time.time()
    if train:
        runner.train()
    train_s = time.time() - t0
    return runner, runner.test(), train_s

