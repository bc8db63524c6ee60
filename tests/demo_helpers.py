"""Shared by the reliability tests that run the demo detector config through the real command-line tools.

The demo config is shrunk with ``--cfg-options`` (a 1-block-per-stage RoPE-Swin of width 32, 32-channel
FPN and heads, 64 px images), trained on a small generated COCO-format set.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / 'tests' / 'resume_driver.py'
TRAIN = ROOT / 'tools' / 'train.py'
DIST_TRAIN = ROOT / 'tools' / 'dist_train.sh'


def demo_config() -> Path:
    found = sorted((ROOT / 'configs' / 'demo').glob('*.py'))
    if not found:
        raise FileNotFoundError(f'no demo config under {ROOT / "configs" / "demo"}')
    return found[0]


def make_coco(root: Path, *, count: int = 4, size: int = 64) -> Path:
    """COCO json + JPEGs with boxes and polygon masks of two classes (the demo's format)."""
    import numpy as np
    from PIL import Image
    (root / 'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(count):
        img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        for cat, (x, y, w, h) in ((1, (4 + i, 6, 20, 16)), (2, (34, 30 - i, 24, 28))):
            img[y:y + h, x:x + w] = (220, 40, 40) if cat == 1 else (40, 40, 220)
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cat, bbox=[x, y, w, h], area=w * h,
                             iscrowd=0, segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
        Image.fromarray(img).save(root / 'images' / f'{i}.jpg', quality=95)
        images.append(dict(id=i + 1, file_name=f'{i}.jpg', height=size, width=size))
    (root / 'train.json').write_text(json.dumps(dict(
        images=images, annotations=anns, categories=[dict(id=1, name='red'), dict(id=2, name='blue')])))
    return root


def tiny_config(tmp: Path, data_root: Path, *, base: Optional[Path] = None, batch_size: int = 2,
                max_epochs: int = 3, deterministic_step: bool = False) -> Path:
    """A config file inheriting the demo config with a tiny model, the generated data and no validation.

    ``deterministic_step``: no random draw inside a training step (samplers keep every candidate,
    no drop-path, no flip) and a constant lr, for comparisons across process layouts.
    """
    base = base or demo_config()
    sampler = 'dict(num=100000)' if deterministic_step else 'dict()'
    text = f"""
_base_ = {str(base)!r}
custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(embed_dims=32, depths=[1, 1, 1, 1], num_heads=[2, 4, 8, 16], window_size=4, init_cfg=None,
                  drop_path_rate={0.0 if deterministic_step else 0.1}, out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32),
                  bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=2),
                  mask_roi_extractor=dict(out_channels=32),
                  mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=2)),
    train_cfg=dict(rpn=dict(sampler={sampler}), rcnn=dict(sampler={sampler})))
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=(64, 64), keep_ratio=True),
                  dict(type='RandomFlip', prob={0.0 if deterministic_step else 0.5}), dict(type='PackDetInputs')]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True), batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='CocoDataset', data_root={str(data_root) + '/'!r}, ann_file='train.json',
                 data_prefix=dict(img='images/'), metainfo=dict(classes=('red', 'blue')),
                 filter_cfg=dict(filter_empty_gt=True, min_size=0), pipeline=train_pipeline, _delete_=True))
val_dataloader = None
val_evaluator = None
val_cfg = None
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={max_epochs}, val_interval=1000, _delete_=True)
param_scheduler = {'[]' if deterministic_step else
                   "[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]"}
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=True), logger=dict(interval=1))
randomness = dict(seed=0)
"""
    path = tmp / 'tiny_demo.py'
    path.write_text(text)
    return path


def env() -> dict[str, str]:
    # The shell launchers call `python`: make it this interpreter (the project's venv).
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get('PATH', '')])
    return dict(os.environ, OMP_NUM_THREADS='1', PATH=path,
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd: Sequence[str], timeout: int = 150, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT,
                          env=dict(env(), **extra_env), timeout=timeout)


def train(config: Path, work_dir: Path, options: Sequence[str] = (), *, kill: Optional[str] = None,
          record: Optional[Path] = None, resume: bool = False, amp: bool = False,
          rope_report: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``tools/train.py CONFIG --work-dir W [--resume] [--amp] --cfg-options ...`` in a subprocess,
    through resume_driver.py (which arms the kill and records the data order)."""
    cmd: list = [sys.executable, DRIVER]
    cmd += ['--kill', kill] if kill else []
    cmd += ['--record', record] if record else []
    cmd += ['--rope-report', rope_report] if rope_report else []
    cmd += [TRAIN, config, '--work-dir', work_dir] + (['--resume'] if resume else []) + (['--amp'] if amp else [])
    cmd += ['--cfg-options', *options] if options else []
    return run(cmd)


def records(path: Path) -> list[tuple[int, str]]:
    return [(int(a), b) for a, b in (line.split() for line in path.read_text().splitlines())]
