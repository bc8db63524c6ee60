"""Detect / segment instances in image files and write the drawn predictions as PNGs.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_DIR [IMAGE_OR_DIR ...] [--out-dir DIR]
                          [--score-thr 0.3] [--device cpu|cuda] [--cfg-options key=value ...]
                          [--allow-partial-load] [--debug]

One ``<out-dir>/<image name>.png`` per input image, with boxes, masks, class names and scores, each
written atomically. Refused before anything is read: an ``--out-dir`` that holds input images, two
inputs that would get one output name (``a.jpg`` and ``a.png``), a checkpoint that does not fit the
config (unless ``--allow-partial-load``). An image that cannot be decoded is named with the reason
and skipped; the others are drawn, and the tool exits 1 at the end with the list.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import warnings
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _common import (OneLineArgumentParser, PartialFailure, ToolError, add_common_args,  # noqa: E402
                     check_checkpoint_file, load_config, run_tool)

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description='Draw a detector\'s predictions on images')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('inputs', nargs='+', help='image files or folders of images')
    p.add_argument('--out-dir', default='outputs')
    p.add_argument('--score-thr', type=float, default=0.3)
    p.add_argument('--device', default='cpu')
    add_common_args(p, launcher=False)
    return p.parse_args(argv)


def collect(inputs: list[str]) -> list[str]:
    files = []
    for item in inputs:
        if osp.isdir(item):
            files += sorted(osp.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTS))
        elif osp.isfile(item):
            files.append(item)
        else:
            raise ToolError(f'input not found: {item!r} (give image files or folders)')
    if not files:
        raise ToolError(f'no images ({", ".join(IMAGE_EXTS)}) in {inputs}')
    return files


def output_names(files: list[str], out_dir: str, *, protected: Sequence[str] = ()) -> dict[str, str]:
    """``input -> <out_dir>/<stem>.png``; refuses an out-dir holding inputs and colliding names."""
    real_out = osp.realpath(out_dir)
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise ToolError(f'--out-dir {out_dir!r} is a file; give a folder for the drawn images')
    for f in files:
        if osp.realpath(osp.dirname(osp.abspath(f))) == real_out:
            raise ToolError(f'--out-dir {out_dir!r} holds the input image {f!r}; the drawn PNGs would land '
                            f'among (and could replace) the inputs. Give a separate --out-dir')
    outs: dict[str, str] = {}
    by_out: dict[str, str] = {}
    for f in files:
        out = osp.join(out_dir, osp.splitext(osp.basename(f))[0] + '.png')
        if out in by_out:
            raise ToolError(f'inputs {by_out[out]!r} and {f!r} would both be drawn to {out!r}; rename one, '
                            f'or run them with different --out-dir')
        by_out[out] = f
        outs[f] = out
    from ropevit.fileio import refuse_overwriting_inputs
    refuse_overwriting_inputs(outs.values(), list(files) + list(protected), what='output')
    return outs


def build_model(cfg, checkpoint: str, *, device: str, allow_partial: bool):
    """mmdet's ``init_detector`` without a checkpoint, then the checkpoint loaded strictly (every key
    and shape must fit; ``allow_partial``: a warning naming the keys) and its class names."""
    from mmdet.apis import init_detector

    from ropevit.checkpoint.common import unwrap_state_dict
    from ropevit.checkpoint.io import load_checkpoint_file
    from ropevit.mm.strict_load import _REVISE_KEYS, _revise, check_model_state_dict

    if not osp.isfile(checkpoint):
        raise ToolError(f'checkpoint not found: {checkpoint!r}; give the .pth file written by tools/train.py')
    ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
    if hasattr(cfg.model.backbone, 'init_cfg'):
        cfg.model.backbone.init_cfg = None  # the checkpoint carries the backbone too
    with warnings.catch_warnings(record=True):  # "checkpoint is None, use COCO classes": set below
        model = init_detector(cfg, None, device=device)
    state = _revise(unwrap_state_dict(ckpt), _REVISE_KEYS)
    check_model_state_dict(model, state, source=checkpoint, allow_partial=allow_partial)
    model.load_state_dict(state, strict=False)
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    palette = model.dataset_meta.get('palette')   # the config's, as init_detector prefers it
    if 'dataset_meta' in meta:
        model.dataset_meta = {k.lower(): v for k, v in meta['dataset_meta'].items()}
    elif 'CLASSES' in meta:
        model.dataset_meta = {'classes': meta['CLASSES']}
    else:
        print(f'warning: {checkpoint} holds no class names (meta.dataset_meta); using COCO\'s', file=sys.stderr)
    if palette is not None:
        model.dataset_meta['palette'] = palette
    return model


def main(argv: Optional[Sequence[str]] = None) -> list[str]:
    args = parse_args(argv)
    if not 0.0 <= args.score_thr <= 1.0:
        raise ToolError(f'--score-thr must be in [0, 1], got {args.score_thr}')
    files = collect(args.inputs)
    outs = output_names(files, args.out_dir, protected=(args.config, args.checkpoint))
    check_checkpoint_file(args.checkpoint)
    cfg = load_config(args.config, args.cfg_options, None)
    if cfg.get('default_scope', 'mmdet') != 'mmdet':
        raise ToolError(f'tools/infer.py draws detections; {args.config} has scope {cfg.default_scope!r}')
    import mmcv
    from mmdet.apis import inference_detector
    from mmdet.registry import VISUALIZERS

    from ropevit.fileio import atomic_target
    from ropevit.datacheck import diagnose_image

    model = build_model(cfg, args.checkpoint, device=args.device, allow_partial=args.allow_partial_load)
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='ropevit_infer'))
    vis.dataset_meta = model.dataset_meta
    os.makedirs(args.out_dir, exist_ok=True)
    written, failed = [], []
    for path in files:
        try:
            img = mmcv.imread(path, channel_order='rgb')
        except Exception:  # noqa: BLE001  (cv2 raises on some broken files, returns None on others)
            img = None
        if img is None:
            reason = diagnose_image(path) or 'the decoder returned no image'
            print(f'skipped {path}: cannot be decoded ({reason})', file=sys.stderr, flush=True)
            failed.append(f'{path} ({reason})')
            continue
        result = inference_detector(model, path)
        vis.add_datasample(osp.basename(path), img, data_sample=result, draw_gt=False, show=False,
                           pred_score_thr=args.score_thr)
        out = outs[path]
        with atomic_target(out) as tmp:
            mmcv.imwrite(mmcv.rgb2bgr(vis.get_image()), tmp)
        n = int((result.pred_instances.scores >= args.score_thr).sum())
        print(f'{path}: {n} instances >= {args.score_thr} -> {out}')
        written.append(out)
    if failed:
        raise PartialFailure(f'{len(failed)} of {len(files)} images could not be decoded and were skipped '
                             f'(the other {len(written)} were drawn to {args.out_dir}): ' + '; '.join(failed))
    return written


if __name__ == '__main__':
    sys.exit(run_tool(main))
