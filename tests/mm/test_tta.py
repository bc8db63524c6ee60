"""ropevit.mm.tta.apply_tta: the config surgery of mmseg's / mmdet's ``tools/test.py --tta``."""
from __future__ import annotations

import copy
import os

import pytest
from mmengine.config import Config

from ropevit.mm.tta import apply_tta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TTA_SEG = os.path.join(ROOT, 'configs', '_base_', 'tta_seg.py')
TTA_DET = os.path.join(ROOT, 'configs', '_base_', 'tta_det.py')
MMDET_MASK_RCNN = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
MMDET_FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'


def _write_config(tmp_path, text: str, name: str = 'cfg.py') -> Config:
    path = tmp_path / name
    path.write_text(text)
    return Config.fromfile(str(path))


def _seg_cfg(**extra) -> Config:
    """A minimal mmseg-style config (no TTA settings) held in memory."""
    cfg = dict(
        default_scope='mmseg',
        model=dict(type='EncoderDecoder', backbone=dict(type='RoPESwin'), decode_head=dict(type='UPerHead')),
        test_dataloader=dict(batch_size=1, dataset=dict(
            type='ADE20KDataset', data_root='data/ade',
            pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')])),
    )
    cfg.update(extra)
    return Config(cfg)


def test_seg_tta_wraps_model_and_swaps_pipeline():
    tta = Config.fromfile(TTA_SEG)
    cfg = _seg_cfg(tta_model=tta.tta_model, tta_pipeline=tta.tta_pipeline)
    before = copy.deepcopy(cfg.to_dict())
    out = apply_tta(cfg)
    assert out.model.type == 'SegTTAModel'
    assert out.model.module.to_dict() == before['model']            # the original model, unchanged
    assert out.test_dataloader.dataset.pipeline == tta.tta_pipeline
    assert cfg.to_dict() == before                                     # input config not modified
    # mmseg's recipe: 6 scale ratios x 2 flips
    tta_step = out.test_dataloader.dataset.pipeline[1]
    assert tta_step.type == 'TestTimeAug'
    assert [t['scale_factor'] for t in tta_step.transforms[0]] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert sorted(t['prob'] for t in tta_step.transforms[1]) == [0.0, 1.0]


def test_same_result_as_mmseg_tools_test_tta():
    """Same config out as the three lines of mmseg 1.2.2's tools/test.py for --tta."""
    tta = Config.fromfile(TTA_SEG)
    cfg = _seg_cfg(tta_model=tta.tta_model, tta_pipeline=tta.tta_pipeline)
    ours = apply_tta(cfg)
    theirs = copy.deepcopy(cfg)
    theirs.test_dataloader.dataset.pipeline = theirs.tta_pipeline   # mmseg/.mim/tools/test.py
    theirs.tta_model.module = theirs.model
    theirs.model = theirs.tta_model
    assert ours.model.to_dict() == theirs.model.to_dict()
    assert ours.test_dataloader.to_dict() == theirs.test_dataloader.to_dict()


@pytest.mark.parametrize('missing', [('tta_model', 'tta_pipeline'), ('tta_pipeline',), ('tta_model',)])
def test_no_tta_settings_is_a_clear_error(missing):
    tta = Config.fromfile(TTA_SEG)
    extra = {k: tta[k] for k in ('tta_model', 'tta_pipeline') if k not in missing}
    with pytest.raises(ValueError) as err:
        apply_tta(_seg_cfg(**extra))
    message = str(err.value)
    for key in missing:
        assert key in message
    assert 'configs/_base_/tta_seg.py' in message and 'configs/_base_/tta_det.py' in message


def test_pipeline_without_test_time_aug_is_rejected():
    cfg = _seg_cfg(tta_model=dict(type='SegTTAModel'),
                   tta_pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')])
    with pytest.raises(ValueError, match='TestTimeAug'):
        apply_tta(cfg)


def test_unknown_tta_model_is_rejected():
    tta = Config.fromfile(TTA_SEG)
    cfg = _seg_cfg(tta_model=dict(type='MyTTA'), tta_pipeline=tta.tta_pipeline)
    with pytest.raises(ValueError, match="'MyTTA'"):
        apply_tta(cfg)


def test_wrapped_datasets_get_the_pipeline():
    tta = Config.fromfile(TTA_SEG)
    inner = dict(type='ADE20KDataset', pipeline=[dict(type='LoadImageFromFile')])
    cfg = _seg_cfg(tta_model=tta.tta_model, tta_pipeline=tta.tta_pipeline)
    cfg.test_dataloader.dataset = dict(type='ConcatDataset', datasets=[
        dict(type='RepeatDataset', times=2, dataset=copy.deepcopy(inner)), copy.deepcopy(inner)])
    out = apply_tta(cfg)
    concat = out.test_dataloader.dataset
    assert 'pipeline' not in concat and 'pipeline' not in concat.datasets[0]
    assert concat.datasets[0].dataset.pipeline == tta.tta_pipeline
    assert concat.datasets[1].pipeline == tta.tta_pipeline


def test_det_tta_on_box_detector_matches_mmdet_tools_test(tmp_path):
    """Faster R-CNN + tta_det.py: the model and pipeline mmdet 3.3's tools/test.py --tta would use."""
    cfg = _write_config(tmp_path, f"_base_ = [{MMDET_FASTER_RCNN!r}, {TTA_DET!r}]\n")
    out = apply_tta(cfg)
    assert out.model.type == 'DetTTAModel' and out.model.module.type == 'FasterRCNN'
    assert out.model.tta_cfg.nms.iou_threshold == 0.5
    theirs = copy.deepcopy(cfg)                                   # mmdet/.mim/tools/test.py
    from mmengine.config import ConfigDict
    theirs.model = ConfigDict(**theirs.tta_model, module=theirs.model)
    theirs.test_dataloader.dataset.pipeline = theirs.tta_pipeline
    assert out.model.to_dict() == theirs.model.to_dict()
    assert out.test_dataloader.to_dict() == theirs.test_dataloader.to_dict()


def test_mask_rcnn_tta_needs_boxes_only(tmp_path):
    cfg = _write_config(tmp_path, f"_base_ = [{MMDET_MASK_RCNN!r}, {TTA_DET!r}]\ntta_boxes_only = False\n")
    with pytest.raises(ValueError, match='model.roi_head.mask_head'):
        apply_tta(cfg)


def test_mask_rcnn_boxes_only_builds_a_box_tta_model(tmp_path):
    cfg = _write_config(tmp_path, f"_base_ = [{MMDET_MASK_RCNN!r}, {TTA_DET!r}]\n")
    assert cfg.model.roi_head.mask_head is not None
    with pytest.warns(UserWarning, match='bbox'):
        out = apply_tta(cfg)
    assert out.model.module.roi_head.mask_head is None
    assert out.test_evaluator.metric == 'bbox'
    assert cfg.test_evaluator.metric == ['bbox', 'segm']             # input untouched

    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    out.model.module.backbone.init_cfg = None                        # no download
    model = MODELS.build(out.model)
    assert type(model).__name__ == 'DetTTAModel'
    assert not model.module.roi_head.with_mask and model.module.roi_head.with_bbox


def test_boxes_only_needs_a_bbox_metric(tmp_path):
    cfg = _write_config(tmp_path, f"_base_ = [{MMDET_MASK_RCNN!r}, {TTA_DET!r}]\n"
                                  "test_evaluator = dict(metric='segm')\n")
    with pytest.raises(ValueError, match="'segm'"):
        apply_tta(cfg)


# --------------------------------------------------------------------------------------------
# end to end: TTA on a tiny generated ADE20k-format set, through mmengine's Runner
# --------------------------------------------------------------------------------------------
MMSEG_UPERNET_SWIN = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'


def _make_ade_set(root, *, count: int = 2, size: tuple[int, int] = (48, 64)) -> str:
    """ADE20k folder layout: images/validation/*.jpg and annotations/validation/*.png (0 = ignore)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    height, width = size
    for split in ('images/validation', 'annotations/validation'):
        (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = np.ones((height, width), np.uint8)                    # class 1 (-> 0 after reduce)
        label[:, width // 2:] = 2
        label[height // 4: height // 2, width // 4: width // 2] = 3
        label[:2] = 0                                                  # an ignored border
        palette = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
        image = palette[label] + rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / 'images' / 'validation' / f'img_{i}.jpg', quality=95)
        Image.fromarray(label).save(root / 'annotations' / 'validation' / f'img_{i}.png')
    return str(root)


def _tiny_seg_config(tmp_path, data_root: str, *, base: str = MMSEG_UPERNET_SWIN, tta_base: bool = False,
                     test_pipeline: str = '', extra: str = '') -> Config:
    """``base`` with a tiny Swin-UperNet and the generated set as test data (single process).

    mmseg's own configs already carry mmseg's TTA recipe (default_runtime.py: tta_model,
    datasets/ade20k.py: tta_pipeline), and mmengine refuses a key defined by two bases, so
    ``tta_seg.py`` is added only for bases without it (``tta_base=True``).
    """
    bases = [base, TTA_SEG] if tta_base else [base]
    text = f"""
_base_ = {bases!r}
model = dict(
    backbone=dict(init_cfg=None, embed_dims=32, depths=[2, 2], num_heads=[2, 4], strides=(4, 2),
                  out_indices=(0, 1), drop_path_rate=0.0),
    decode_head=dict(in_channels=[32, 64], in_index=[0, 1], channels=32, pool_scales=(1, 2),
                     norm_cfg=dict(type='BN', requires_grad=True)),
    auxiliary_head=None)
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root!r}{test_pipeline}))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
train_dataloader = None
train_cfg = None
val_dataloader = None
val_cfg = None
val_evaluator = None
optim_wrapper = None
param_scheduler = None
work_dir = {str(tmp_path / 'work')!r}
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'), dist_cfg=dict(backend='gloo'))
default_hooks = dict(checkpoint=None, logger=dict(interval=1))
{extra}
"""
    path = tmp_path / 'tiny_seg.py'
    path.write_text(text)
    return Config.fromfile(str(path))


def _test_with_runner(cfg: Config, checkpoint: str):
    """``Runner.test()`` with weights from ``checkpoint``; returns metrics and backbone input sizes."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.load_from = checkpoint
    cfg.launcher = 'none'
    runner = Runner.from_cfg(cfg)
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    sizes: list[tuple[int, int]] = []
    model.backbone.register_forward_pre_hook(lambda mod, args: sizes.append(tuple(args[0].shape[-2:])))
    metrics = runner.test()
    return metrics, sizes


def _random_checkpoint(cfg: Config, path) -> str:
    """Random weights for the tiny model, shared by the runs that are compared.

    The classifier's bias keeps predictions among the 3 classes the set has, so that mIoU is a
    non-trivial function of the per-pixel predictions (a random 150-way head scores 0).
    """
    import torch
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        model.decode_head.conv_seg.bias[3:] = -20.0
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, str(path))
    return str(path)


@pytest.mark.timeout(120)
def test_seg_tta_runs_multi_scale_flip_and_reports_miou(tmp_path):
    import math
    data_root = _make_ade_set(tmp_path / 'ade', count=2, size=(48, 64))
    cfg = _tiny_seg_config(tmp_path, data_root)
    checkpoint = _random_checkpoint(cfg, tmp_path / 'tiny.pth')
    metrics, sizes = _test_with_runner(apply_tta(cfg), checkpoint)
    assert math.isfinite(metrics['mIoU']) and 0.0 < metrics['mIoU'] <= 100.0
    # 2 images x 6 scales x 2 flips, at the scales of mmseg's ratios of the 48x64 originals
    assert len(sizes) == 2 * 6 * 2
    assert sorted(set(sizes)) == sorted({(round(48 * r), round(64 * r)) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)})


@pytest.mark.timeout(120)
def test_seg_tta_with_one_view_equals_plain_test(tmp_path):
    """TTA over the identity view only must give the plain test's mIoU (two code paths)."""
    data_root = _make_ade_set(tmp_path / 'ade', count=2, size=(48, 64))
    one_view = """
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[[dict(type='Resize', scale_factor=1.0, keep_ratio=True)],
                                         [dict(type='RandomFlip', prob=0., direction='horizontal')],
                                         [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
"""
    plain_pipeline = """, pipeline=[
    dict(type='LoadImageFromFile'), dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]"""
    cfg = _tiny_seg_config(tmp_path, data_root, test_pipeline=plain_pipeline, extra=one_view)
    checkpoint = _random_checkpoint(cfg, tmp_path / 'tiny.pth')
    plain, plain_sizes = _test_with_runner(cfg, checkpoint)
    tta, tta_sizes = _test_with_runner(apply_tta(cfg), checkpoint)
    assert plain_sizes == tta_sizes == [(48, 64)] * 2
    assert plain['mIoU'] > 0
    assert tta['mIoU'] == pytest.approx(plain['mIoU'], abs=1e-6)
    assert tta['aAcc'] == pytest.approx(plain['aAcc'], abs=1e-6)
