"""End to end: a few training iterations, then evaluation with mmdet's real CocoMetric (pycocotools).

The Swin config (through the demo config, which inherits configs/mask_rcnn_rope_swin_t.py) and the
ViTDet-style configs/mask_rcnn_rope_vit_b.py, with shrunk backbones and heads, overfit two generated
images: the loss must be finite throughout and clearly lower at the end than at the start, and the
trained model's COCO bbox and segm AP (mmdet's CocoMetric on the same two images) must beat those of the
same model evaluated just before its first iteration (same seed, same initialisation).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> Path:
    from ropevit.data.synthetic_coco import make_synthetic_coco
    # The same two images serve as train and val split (seed+1 is the val seed): overfit, then evaluate.
    root = make_synthetic_coco(tmp_path_factory.mktemp('coco'), num_train=2, num_val=2,
                               image_size=(SIZE, SIZE), seed=3, max_objects=2)
    return root


def _data(cfg: Config, root: Path, repeat: int = 1, size: int = SIZE) -> None:
    """The two generated images as train and val set; the train set ``repeat`` times over (mmengine's
    iteration loop sleeps 2 s at every epoch end: with 2 images and batch 2 that is every iteration)."""
    pipe_train = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=(size, size), keep_ratio=True), dict(type='PackDetInputs')]
    pipe_test = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(size, size), keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                 dict(type='PackDetInputs',
                      meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
    meta = dict(classes=('circle', 'square', 'triangle'))
    for key, split, pipe in (('train_dataloader', 'train', pipe_train), ('val_dataloader', 'train', pipe_test)):
        cfg[key] = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='CocoDataset', data_root=str(root) + '/', metainfo=meta, pipeline=pipe,
                         ann_file=f'annotations/instances_{split}2017.json',
                         data_prefix=dict(img=f'{split}2017/'), filter_cfg=dict(filter_empty_gt=True)))
    if repeat > 1:
        cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=repeat, dataset=cfg.train_dataloader.dataset)
    cfg.val_evaluator = dict(type='CocoMetric', metric=['bbox', 'segm'], format_only=False,
                             ann_file=str(root / 'annotations/instances_train2017.json'))
    cfg.test_dataloader, cfg.test_evaluator = cfg.val_dataloader, cfg.val_evaluator


def _heads(cfg: Config, width: int) -> None:
    cfg.merge_from_dict(dict(model=dict(
        rpn_head=dict(in_channels=width, feat_channels=width),
        roi_head=dict(bbox_roi_extractor=dict(out_channels=width),
                      bbox_head=dict(in_channels=width, fc_out_channels=64, num_classes=3),
                      mask_roi_extractor=dict(out_channels=width),
                      mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=3)))))


def _swin_cfg(root: Path, work_dir: Path) -> Config:
    cfg = Config.fromfile(str(ROOT / 'configs/demo/mask_rcnn_rope_swin_demo.py'))
    assert cfg.model.backbone.type == 'RoPESwin' and cfg.model.backbone.rope == 'mixed'
    cfg.merge_from_dict(dict(model=dict(
        backbone=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=4),
        neck=dict(in_channels=[16, 32, 64, 128], out_channels=32))))
    _heads(cfg, 32)
    return _common(cfg, root, work_dir)


#: The ViTDet arm trains 40 iterations. In the environment a fresh `make setup` gave on 2026-12-03, 14
#: iterations lifted its bbox mAP only 0.012 -> 0.024 (it was 0.233 in 2026-12-02's environment). The
#: previous commit, 6035617, gives the same numbers there, so an installed package changed, not the model.
#: 24 iterations: 0.020 (mAP_50 0.167); 40 clear the margins below.
VIT_ITERS = 40


def _vit_cfg(root: Path, work_dir: Path) -> Config:
    cfg = Config.fromfile(str(ROOT / 'configs/mask_rcnn_rope_vit_b.py'))
    assert cfg.model.backbone.type == 'RoPEViT' and cfg.model.neck.type == 'SimpleFPN'
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    cfg.merge_from_dict(dict(model=dict(
        data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=(SIZE, SIZE), pad_mask=True)]),
        backbone=dict(arch=None, patch_size=8, pretrain_img_size=SIZE,
                      window_size=4, global_attn_indexes=(1, 3), out_indices=(3,), drop_path_rate=0.0),
        neck=dict(backbone_channel=32, in_channels=[8, 16, 32, 32], out_channels=32))))
    cfg.model.backbone.arch = dict(embed_dims=32, depth=4, num_heads=2)  # a dict replaces the preset name
    _heads(cfg, 32)
    # Small objects on 64 px images: the demo config's anchors (4 x stride, not 8) and sampler sizes. With
    # COCO's, 14 iterations do not lift AP above that of the untrained model.
    cfg.merge_from_dict(dict(model=dict(
        rpn_head=dict(anchor_generator=dict(scales=[4])),
        roi_head=dict(bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2)),
                      mask_roi_extractor=dict(roi_layer=dict(sampling_ratio=2))),
        train_cfg=dict(rpn=dict(sampler=dict(num=128)), rcnn=dict(sampler=dict(num=64))))))
    cfg.model.roi_head.bbox_head.conv_out_channels = 32
    return _common(cfg, root, work_dir, iters=VIT_ITERS)


def _common(cfg: Config, root: Path, work_dir: Path, iters: int = 14, size: int = SIZE) -> Config:
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # a 14-iteration model is unsure: keep every detection for the metric
    _data(cfg, root, repeat=iters, size=size)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=1000)
    cfg.val_cfg, cfg.test_cfg = dict(type='ValLoop'), dict(type='TestLoop')
    cfg.param_scheduler = []
    cfg.optim_wrapper.optimizer = dict(type='AdamW', lr=2e-3, weight_decay=0.0)
    cfg.default_hooks = dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
    return cfg


class EvalBeforeTraining(Hook):
    """Evaluates the model as training starts (initialised, not yet trained) and records every evaluation."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.metrics: list[dict] = []

    def before_train(self, runner) -> None:
        runner.val_loop.run()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics.append(dict(metrics or {}))


@pytest.fixture
def one_thread():
    """One intra-op thread: the same sums in the same order on every run, so the comparisons are exact."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('make_cfg', [_swin_cfg, _vit_cfg], ids=['rope_swin', 'rope_vit_vitdet'])
def test_train_then_coco_eval(make_cfg, coco_root: Path, tmp_path: Path, one_thread):
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner
    register_all_modules()
    import ropevit.mm  # noqa: F401

    cfg = make_cfg(coco_root, tmp_path)
    runner = Runner.from_cfg(cfg)
    record = EvalBeforeTraining()
    runner.register_hook(record)
    runner.train()
    untrained = record.metrics[0]
    losses = list(runner.message_hub.get_scalar('train/loss').data[0])
    assert len(losses) == cfg.train_cfg.max_iters
    assert all(math.isfinite(v) for v in losses), losses
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses  # overfitting two images: a clear decrease, not noise

    metrics = runner.val()
    assert metrics == record.metrics[-1]                # the evaluation at the end of training, the same again
    # -1 would mean pycocotools found no ground truth; the trained model must clearly beat its own start
    # (measured, bbox / segm mAP: Swin 0 / 0 -> 0.347 / 0.480; ViT 0.012 / 0.008 -> 0.233 / 0.100)
    for task in ('bbox', 'segm'):
        for k, margin in (('mAP', 0.05), ('mAP_50', 0.1)):
            before, after = untrained[f'coco/{task}_{k}'], metrics[f'coco/{task}_{k}']
            assert 0.0 <= before and before + margin < after <= 1.0, (task, k, untrained, metrics)
