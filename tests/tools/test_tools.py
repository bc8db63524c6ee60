"""Command-line tools: the missing-dataset error of train/test, and infer.py drawing PNGs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _run(args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)


def test_train_and_test_without_coco_exit_with_clear_error(tmp_path: Path):
    # From an empty cwd, the config's relative data/coco/ cannot be a real COCO checkout.
    config = ROOT / 'configs' / 'mask_rcnn_rope_swin_t.py'
    train = _run([ROOT / 'tools' / 'train.py', config, '--work-dir', tmp_path / 'w'], tmp_path)
    assert train.returncode != 0
    err = train.stderr
    assert "data_root 'data/coco/' does not exist" in err, err[-2000:]
    assert 'annotations/instances_train2017.json' in err and 'train2017/' in err   # the expected layout
    assert 'make demo' in err and 'synthetic_coco' in err                           # how to make demo data
    assert 'Traceback' not in err
    assert not list((tmp_path / 'w').glob('*.pth'))

    # Root present but the annotation json missing: the error names the json.
    (tmp_path / 'data' / 'coco' / 'val2017').mkdir(parents=True)
    test = _run([ROOT / 'tools' / 'test.py', config, tmp_path / 'none.pth', '--work-dir', tmp_path / 'w'], tmp_path)
    assert test.returncode != 0
    assert "annotation file 'data/coco/annotations/instances_val2017.json' does not exist" in test.stderr, \
        test.stderr[-2000:]
    assert 'Traceback' not in test.stderr


TINY = """
_base_ = {base!r}
model = dict(
    backbone=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=4, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16), bbox_head=dict(in_channels=16, fc_out_channels=32),
                  mask_roi_extractor=dict(out_channels=16),
                  mask_head=dict(in_channels=16, conv_out_channels=16)))
"""


def test_infer_draws_predictions_as_png(tmp_path: Path):
    sys.path.insert(0, str(ROOT / 'tools'))
    import infer
    from mmdet.registry import MODELS
    from mmengine.config import Config

    cfg_path = tmp_path / 'tiny.py'
    cfg_path.write_text(TINY.format(base=str(ROOT / 'configs/demo/mask_rcnn_rope_swin_demo.py')))
    cfg = infer.load_config(str(cfg_path), None, None)
    model = MODELS.build(cfg.model)
    classes = ('circle', 'square', 'triangle')
    ckpt = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=classes))), ckpt)

    imgs = tmp_path / 'imgs'
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in (('a.jpg', (96, 128)), ('b.png', (64, 64))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(imgs / name)
    out = tmp_path / 'out'
    written = infer.main([str(cfg_path), str(ckpt), str(imgs), '--out-dir', str(out), '--score-thr', '0'])
    assert sorted(Path(p).name for p in written) == ['a.png', 'b.png']
    drawn = np.asarray(Image.open(out / 'a.png').convert('RGB'))
    assert drawn.shape == (96, 128, 3)
    # An untrained model still returns low-score detections; with threshold 0 they are drawn on the image.
    assert not np.array_equal(drawn, np.asarray(Image.open(imgs / 'a.jpg').convert('RGB')))

    from ropevit.cli import ToolError
    with pytest.raises(ToolError, match='input not found'):
        infer.main([str(cfg_path), str(ckpt), str(tmp_path / 'missing.jpg')])
