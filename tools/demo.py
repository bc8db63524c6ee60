"""The embedded demo: train and evaluate a RoPE-Swin Mask R-CNN on generated COCO-format data, on a CPU.

    python tools/demo.py [--data-root data/synthetic_coco] [--work-dir work_dirs/demo] [--seed 0]
                         [--config configs/demo/mask_rcnn_rope_swin_demo.py] [--cfg-options k=v ...]

1. writes the synthetic shapes set (real COCO format: JPEGs + instances_*.json) on first use;
2. trains the demo config (mmengine's log lines show the loss and the ETA);
3. evaluates on the validation split with mmdet's CocoMetric (pycocotools), prints bbox and mask AP;
4. draws the predictions on a few validation images into ``<work-dir>/predictions.png``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
sys.path.insert(0, ROOT)

from _common import run_tool  # noqa: E402
from _demo import demo_parser, make_data, train_and_test  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_rope_swin_demo.py')


def parse_args(argv=None) -> argparse.Namespace:
    p = demo_parser('Train + evaluate the RoPE-Swin Mask R-CNN demo on generated data', config=DEFAULT_CONFIG,
                    data_root='data/synthetic_coco', work_dir='work_dirs/demo', num_train=240, num_val=48,
                    num_draw=8)
    p.add_argument('--checkpoint', help='skip training: evaluate and draw this trained demo checkpoint')
    return p.parse_args(argv)


def redirect_data(cfg, data_root: str) -> None:
    root = data_root.rstrip('/') + '/'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name):
            cfg[name].dataset.data_root = root
    for name in ('val_evaluator', 'test_evaluator'):
        if cfg.get(name):
            cfg[name].ann_file = root + 'annotations/instances_val2017.json'


def draw_predictions(runner, cfg, data_root: str, out_png: str, num: int) -> None:
    """Run the trained model on ``num`` validation images and tile the drawn results into one PNG."""
    import numpy as np
    from mmdet.apis import inference_detector
    from mmdet.registry import VISUALIZERS
    from PIL import Image

    model = runner.model
    model.cfg = cfg
    model.dataset_meta = runner.test_dataloader.dataset.metainfo  # inference_detector builds its test pipeline from model.cfg
    model.eval()
    img_dir = osp.join(data_root, 'val2017')
    files = sorted(os.listdir(img_dir))[:num]
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name=f'demo_vis_{time.time_ns()}'))
    vis.dataset_meta = model.dataset_meta
    tiles = []
    for f in files:
        img = np.asarray(Image.open(osp.join(img_dir, f)).convert('RGB'))
        result = inference_detector(model, osp.join(img_dir, f))
        vis.add_datasample(f, img, data_sample=result, draw_gt=False, show=False, pred_score_thr=0.5)
        tiles.append(vis.get_image())
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    h, w = tiles[0].shape[:2]
    canvas = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * h:r * h + t.shape[0], c * w:c * w + t.shape[1]] = t
    from ropevit.fileio import atomic_target
    with atomic_target(out_png) as tmp:
        Image.fromarray(canvas).save(tmp)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from ropevit.data.synthetic_coco import make_synthetic_coco
    start = make_data(args, make_synthetic_coco, tag='demo')

    def adapt(cfg) -> None:
        redirect_data(cfg, args.data_root)
        cfg.train_cfg.val_interval = cfg.train_cfg.max_epochs + 1  # evaluated once below, not twice
        if args.checkpoint:
            cfg.load_from = args.checkpoint

    # CocoMetric (pycocotools) on the validation split: bbox and segm
    runner, metrics, train_s = train_and_test(args, adapt, train=not args.checkpoint)
    total_s = time.time() - start

    print('[demo] ---------------------------------------------')
    print(f"[demo] bbox AP {metrics['coco/bbox_mAP']:.3f}  AP50 {metrics['coco/bbox_mAP_50']:.3f}  "
          f"AP75 {metrics['coco/bbox_mAP_75']:.3f}")
    print(f"[demo] mask AP {metrics['coco/segm_mAP']:.3f}  AP50 {metrics['coco/segm_mAP_50']:.3f}  "
          f"AP75 {metrics['coco/segm_mAP_75']:.3f}")
    print(f'[demo] training {train_s / 60:.1f} min, total {total_s / 60:.1f} min', flush=True)
    out_png = osp.join(args.work_dir, 'predictions.png')
    draw_predictions(runner, runner.cfg, args.data_root, out_png, args.num_draw)
    print(f'[demo] predictions on {args.num_draw} validation images: {out_png}')
    return metrics


if __name__ == '__main__':
    sys.exit(run_tool(main))
