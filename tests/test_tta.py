"""ropevit.mm.tta.apply_tta: the config surgery of mmseg's / mmdet's ``tools/test.py --tta``."""
from __future__ import annotations

import copy
import os

import pytest
from mmengine.config import Config

from ropevit.mm.tta import apply_tta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
