"""End to end through mmengine's Runner: the UperNet RoPE-Swin and RoPE-ViT configs (backbones and heads
shrunk by overrides) train a few iterations on a generated ADE20k-layout set, then are tested with mmseg's
ADE20KDataset and IoUMetric, in whole and in slide inference, on 50x70 images: not a multiple of the
Swin window (7 tokens of stride 4) nor of the ViT patch (16). The trained model's mIoU and pixel accuracy on
the validation images must beat those of the same model evaluated just before its first iteration (same
seed, same initialisation)."""
from __future__ import annotations

import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook

import ropevit.mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
IMAGE_HW = (50, 70)
CROP = (40, 40)
ITERS = 8

SHRINK = {
    'upernet_rope_swin_t_ade20k.py': """
model = dict(
    backbone=dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=7, init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=16, pool_scales=(1, 2), norm_cfg=dict(type='BN')),
    auxiliary_head=dict(in_channels=64, channels=8, norm_cfg=dict(type='BN')))
""",
    'upernet_rope_vit_b_ade20k.py': """
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_heads=2, depth=12), init_cfg=None),
    neck=dict(in_channels=[32] * 4, out_channels=16),
    decode_head=dict(in_channels=[16] * 4, channels=16, pool_scales=(1, 2), norm_cfg=dict(type='BN')),
    auxiliary_head=dict(in_channels=16, channels=8, norm_cfg=dict(type='BN')))
""",
}


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory) -> str:
    from ropevit.data.synthetic_ade import make_synthetic_ade
    return str(make_synthetic_ade(tmp_path_factory.mktemp('ade'), num_train=4, num_val=2, image_size=IMAGE_HW))


def _config(tmp_path, name: str, data_root: str, shrink: str | None = None, extra: str = ''):
    """``configs/name`` shrunk (``shrink``, default ``SHRINK[name]``) on the generated data, trained ITERS
    iterations and evaluated at the end; ``extra`` is appended to the config text."""
    from mmengine.config import Config
    text = f"""
_base_ = {osp.join(ROOT, 'configs', name)!r}
{SHRINK[name] if shrink is None else shrink}
model.update(data_preprocessor=dict(size={CROP}))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=({IMAGE_HW[1]}, {IMAGE_HW[0]}), ratio_range=(0.9, 1.2), keep_ratio=True),
    dict(type='RandomCrop', crop_size={CROP}, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')]
test_pipeline = [                       # the original 50x70: no resize, so no size is a window/patch multiple
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r}, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end={ITERS})]
train_cfg = dict(max_iters={ITERS}, val_interval={ITERS})
randomness = dict(seed=0)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={ITERS}),
                     visualization=dict(type='SegVisualizationHook', draw=False))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
{extra}
"""
    path = tmp_path / f'tiny_{name}'
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    # one epoch of ITERS batches: mmengine's iteration loop sleeps 2 s at every epoch end
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=ITERS, dataset=cfg.train_dataloader.dataset)
    cfg.work_dir = str(tmp_path / 'work')
    return cfg


class EvalBeforeTraining(Hook):
    """Evaluates the model as training starts (initialised, not yet trained) and records every evaluation."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.metrics: list[dict] = []
        self.backbone: dict[str, torch.Tensor] = {}

    def before_train(self, runner) -> None:
        self.backbone = {k: v.detach().clone() for k, v in runner.model.backbone.state_dict().items()}
        runner.val_loop.run()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics.append(dict(metrics or {}))


@pytest.mark.parametrize('name', sorted(SHRINK))
def test_train_then_whole_and_slide_iou(tmp_path, ade_root, name):
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = _config(tmp_path, name, ade_root)
    assert cfg.val_evaluator.type == 'IoUMetric'
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                   # the same sums in the same order on every run: exact comparisons
    try:
        _train_and_test(cfg)
    finally:
        torch.set_num_threads(threads)


def _train_and_test(cfg) -> None:
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    model = runner.model
    record = EvalBeforeTraining()
    runner.register_hook(record)
    runner.train()
    before, after = record.backbone, model.backbone.state_dict()     # initialised weights vs trained ones
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, 'training did not update the backbone'
    assert runner.iter == ITERS
    # mmseg's IoUMetric on the validation images, just before the first iteration and after the last
    untrained, trained = record.metrics[0], record.metrics[-1]
    assert len(record.metrics) == 2, record.metrics
    # (measured: untrained 0 / 0, trained 15.6 / 53.6 for Swin, 30.4 / 82.7 for ViT; the margin is generous)
    assert trained['mIoU'] > untrained['mIoU'] + 5 and trained['aAcc'] > untrained['aAcc'] + 20, (untrained,
                                                                                                   trained)

    # whole: one pass over the 50x70 image; IoUMetric compares the prediction with the 50x70 ground truth
    whole = runner.test()
    assert whole == trained                    # the test split is the validation split: the same evaluation

    model.eval()
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        pred_whole = model.test_step(batch)[0]
    assert tuple(pred_whole.pred_sem_seg.shape) == IMAGE_HW
    assert tuple(pred_whole.seg_logits.data.shape) == (150, *IMAGE_HW)

    # slide: 32x32 windows, stride 24 (overlapping, the last one clipped at the border), averaged logits
    model.test_cfg.update(mode='slide', crop_size=(32, 32), stride=(24, 24))
    slide = runner.test()
    assert 0.0 <= slide['mIoU'] <= 100.0
    with torch.no_grad():
        pred_slide = model.test_step(batch)[0]
    assert tuple(pred_slide.pred_sem_seg.shape) == IMAGE_HW
    # the two modes see different context, so their logits differ (slide really ran)
    assert not torch.allclose(pred_slide.seg_logits.data, pred_whole.seg_logits.data)
