"""Shared by the reliability tests that run the demo detector config through the real command-line tools.

The demo config (configs/demo/mask_rcnn_rope_swin_demo.py) is shrunk further by a config that inherits
it (one block per stage, 32-channel FPN and heads, 64 px images) and trained on a small set made by
ropevit.data.synthetic_coco.
"""
from __future__ import annotations

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
    return ROOT / 'configs' / 'demo' / 'mask_rcnn_rope_swin_demo.py'


def make_coco(root: Path, *, num_train: int = 4, size: int = 64) -> Path:
    """The demo's generated COCO-format set (ropevit.data.synthetic_coco), small and tiny-imaged."""
    from ropevit.data.synthetic_coco import make_synthetic_coco
    return make_synthetic_coco(root, num_train=num_train, num_val=2, image_size=(size, size), seed=0,
                               max_objects=2)


def tiny_config(tmp: Path, data_root: Path, *, base: Optional[Path] = None, batch_size: int = 2,
                max_epochs: int = 3, deterministic_step: bool = False) -> Path:
    """A config file inheriting the demo config, shrunk further (one block per stage, 32-channel FPN
    and heads, 64 px images), on ``data_root``, without validation, a checkpoint every epoch.

    ``deterministic_step``: no random draw inside a training step (the RPN/RoI samplers keep every
    candidate, no drop-path, no flip) and a constant lr, for comparisons across process layouts.
    """
    base = base or demo_config()
    sampler = 'dict(num=100000)' if deterministic_step else 'dict()'
    text = f"""
_base_ = {str(base)!r}
model = dict(
    backbone=dict(embed_dims=32, depths=[1, 1, 1, 1], num_heads=[2, 4, 8, 16], window_size=4,
                  drop_path_rate={0.0 if deterministic_step else 0.1}),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=32),
                  mask_head=dict(num_convs=1, in_channels=32, conv_out_channels=32)),
    train_cfg=dict(rpn=dict(sampler={sampler}), rcnn=dict(sampler={sampler})))
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=(64, 64), keep_ratio=True),
                  dict(type='RandomFlip', prob={0.0 if deterministic_step else 0.5}), dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                       'scale_factor'))]
train_dataloader = dict(batch_size={batch_size}, sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(data_root={str(data_root) + '/'!r}, pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(data_root={str(data_root) + '/'!r}, pipeline=test_pipeline))
val_dataloader = None
val_evaluator = None
val_cfg = None
train_cfg = dict(max_epochs={max_epochs}, val_interval=1000)
param_scheduler = {'[]' if deterministic_step else
                   "[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]"}
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1), logger=dict(interval=1))
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
