"""Detect / segment instances in image files and write the drawn predictions as PNGs.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_DIR [IMAGE_OR_DIR ...] [--out-dir DIR]
                          [--score-thr 0.3] [--device cpu|cuda] [--cfg-options key=value ...]

One ``<out-dir>/<image name>.png`` per input image, with boxes, masks, class names and scores.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _common import load_config  # noqa: E402

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Draw a detector\'s predictions on images')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('inputs', nargs='+', help='image files or folders of images')
    p.add_argument('--out-dir', default='outputs')
    p.add_argument('--score-thr', type=float, default=0.3)
    p.add_argument('--device', default='cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def collect(inputs: list[str]) -> list[str]:
    files = []
    for item in inputs:
        if osp.isdir(item):
            files += sorted(osp.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTS))
        elif osp.isfile(item):
            files.append(item)
        else:
            raise SystemExit(f'input not found: {item!r} (give image files or folders)')
    if not files:
        raise SystemExit(f'no images ({", ".join(IMAGE_EXTS)}) in {inputs}')
    return files


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    if not 0.0 <= args.score_thr <= 1.0:
        raise SystemExit(f'--score-thr must be in [0, 1], got {args.score_thr}')
    files = collect(args.inputs)
    cfg = load_config(args.config, args.cfg_options, None)
    if cfg.get('default_scope', 'mmdet') != 'mmdet':
        raise SystemExit(f'tools/infer.py draws detections; {args.config} has scope {cfg.default_scope!r}')
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    if hasattr(cfg.model.backbone, 'init_cfg'):
        cfg.model.backbone.init_cfg = None  # the checkpoint carries the backbone too
    model = init_detector(cfg, args.checkpoint, device=args.device)
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='ropevit_infer'))
    vis.dataset_meta = model.dataset_meta
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for path in files:
        img = mmcv.imread(path, channel_order='rgb')
        result = inference_detector(model, path)
        out = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        vis.add_datasample(osp.basename(path), img, data_sample=result, draw_gt=False, show=False,
                           pred_score_thr=args.score_thr, out_file=out)
        n = int((result.pred_instances.scores >= args.score_thr).sum())
        print(f'{path}: {n} instances >= {args.score_thr} -> {out}')
        written.append(out)
    return written


if __name__ == '__main__':
    main()
