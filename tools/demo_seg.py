"""The segmentation demo: train and evaluate a RoPE-Swin UperNet on generated ADE20k-layout data, on a CPU.

    python tools/demo_seg.py [--data-root data/synthetic_ade] [--work-dir work_dirs/demo_seg] [--seed 0]
                             [--config configs/demo/upernet_rope_swin_demo_seg.py] [--cfg-options k=v ...]

1. writes the synthetic set (real ADE20k layout: images/*.jpg, annotations/*.png, 0 = other) on first use;
2. trains the demo config with mmseg's ADE20KDataset and transforms (mmengine's log lines show loss and ETA);
3. evaluates on the validation split with mmseg's IoUMetric and prints mIoU;
4. writes ``<work-dir>/predictions.png`` (validation image | ground truth | prediction, one row each) and the
   predicted label maps in ADE format (``<work-dir>/pred_label_maps/*.png``, 1..150, 0 = other).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time
from typing import Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, ROOT)

from _common import run_tool  # noqa: E402
from _demo import demo_parser, make_data, train_and_test  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'demo', 'upernet_rope_swin_demo_seg.py')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = demo_parser('Train + evaluate the RoPE-Swin UperNet demo on generated ADE-format data',
                    config=DEFAULT_CONFIG, data_root='data/synthetic_ade', work_dir='work_dirs/demo_seg',
                    num_train=200, num_val=40, num_draw=6)
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (default 1: this tiny model gains little from more, and on a shared '
                        'machine 2 threads measured ~5x slower per iteration than 1)')
    return p.parse_args(argv)


def redirect_data(cfg, data_root: str) -> None:
    """Point every dataloader of ``cfg`` at ``data_root`` (ADE20k layout)."""
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name):
            cfg[name].dataset.data_root = data_root


def colourise(label: 'np.ndarray', palette: 'np.ndarray') -> 'np.ndarray':
    """``[H, W]`` train ids (255 = ignore, drawn black) -> ``[H, W, 3]`` uint8 colours."""
    import numpy as np
    out = np.zeros((*label.shape, 3), np.uint8)
    valid = label < len(palette)
    out[valid] = palette[label[valid]]
    return out


def write_predictions(runner, work_dir: str, num_draw: int) -> str:
    """Predict the validation images, save ADE-format label maps and one PNG of image | GT | prediction rows."""
    import numpy as np
    import torch
    from PIL import Image

    from ropevit.fileio import atomic_target
    model = runner.model
    model.eval()
    palette = np.asarray(runner.test_dataloader.dataset.metainfo['palette'], np.uint8)     # [150, 3]
    map_dir = osp.join(work_dir, 'pred_label_maps')
    os.makedirs(map_dir, exist_ok=True)
    rows = []
    with torch.no_grad():
        for batch in runner.test_dataloader:
            for sample in model.test_step(batch):
                pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)             # [H, W] 0..149
                name = osp.splitext(osp.basename(sample.img_path))[0]
                with atomic_target(osp.join(map_dir, f'{name}.png')) as tmp:
                    Image.fromarray((pred + 1).astype(np.uint8)).save(tmp)  # ADE labels
                if len(rows) < num_draw:
                    img = np.asarray(Image.open(sample.img_path).convert('RGB'))
                    gt = sample.gt_sem_seg.data[0].cpu().numpy()
                    rows.append(np.concatenate([img, colourise(gt, palette), colourise(pred, palette)], axis=1))
    width = max(r.shape[1] for r in rows)
    canvas = np.full((sum(r.shape[0] + 4 for r in rows), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        canvas[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0] + 4
    out_png = osp.join(work_dir, 'predictions.png')
    with atomic_target(out_png) as tmp:
        Image.fromarray(canvas).save(tmp)
    return out_png


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from ropevit.data.synthetic_ade import make_synthetic_ade
    start = make_data(args, make_synthetic_ade, tag='demo-seg', layout='ADE20k layout, ')

    def adapt(cfg) -> None:
        redirect_data(cfg, args.data_root)
        print(f"[demo-seg] training {cfg.train_cfg.get('max_iters')} iterations; mmengine prints loss and eta "
              f'every {cfg.default_hooks.logger.interval} iterations', flush=True)

    # validates once at the end of training (val_interval = max_iters); IoUMetric on the validation split
    runner, metrics, train_s = train_and_test(args, adapt)
    out_png = write_predictions(runner, args.work_dir, args.num_draw)
    total_s = time.time() - start
    miou = metrics['mIoU'] / 100.0                                   # IoUMetric reports percentages
    print('[demo-seg] ---------------------------------------------')
    print(f"[demo-seg] mIoU {miou:.3f}  aAcc {metrics['aAcc'] / 100:.3f}  mAcc {metrics['mAcc'] / 100:.3f} "
          f'(validation split, {args.num_val} images)' if 'mAcc' in metrics else
          f"[demo-seg] mIoU {miou:.3f}  aAcc {metrics['aAcc'] / 100:.3f} (validation split, {args.num_val} images)")
    print(f'[demo-seg] training {train_s / 60:.1f} min, total {total_s / 60:.1f} min; predictions: {out_png}')
    return metrics


if __name__ == '__main__':
    sys.exit(run_tool(main))
