"""projects/resolution_extrapolation/sweep.py: the test-scale sweep on tiny models and generated data.

What is proven here:
- the sweep runs mmseg's real IoUMetric through mmengine's TestLoop on a tiny checkpoint and gives one
  row per scale, finite metrics, a markdown table and a PNG;
- a larger test scale really changes what the backbone receives (our own forward pre-hook, not the
  sweep's record, sees the resized tensor), and the 1x result equals mmengine's plain ``Runner.test()``;
- an unknown model type, a non-mm config and a checkpoint that does not fit the config are clear errors;
- ``--window-size`` evaluates a windowed backbone with another window (RoPESwin, window 4 -> 2).
"""
from __future__ import annotations

import copy
import importlib.util
import math
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'extrapolation_sweep', osp.join(ROOT, 'projects', 'resolution_extrapolation', 'sweep.py'))
sweep = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sweep                                        # dataclasses look their module up
_spec.loader.exec_module(sweep)

SIZE = 32  # generated images are SIZE x SIZE; the test pipeline resizes to (SIZE, SIZE) at 1x


def _make_ade_set(root, *, count: int = 2) -> str:
    """ADE20k layout (images/validation/*.jpg, annotations/validation/*.png, 0 = ignore), 3 classes."""
    from PIL import Image
    rng = np.random.default_rng(0)
    palette = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    for split in ('images/validation', 'annotations/validation'):
        (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = np.ones((SIZE, SIZE), np.uint8)
        label[:, SIZE // 2:] = 2
        label[SIZE // 4: SIZE // 2, 4 + i: SIZE // 2] = 3
        image = palette[label] + rng.integers(0, 40, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / 'images' / 'validation' / f'img_{i}.jpg', quality=95)
        Image.fromarray(label).save(root / 'annotations' / 'validation' / f'img_{i}.png')
    return str(root)


VIT = "dict(type='VisionTransformer', img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2, " \
      "num_heads=2, out_indices=(1,), final_norm=True, init_cfg=None)"
SWIN = "dict(type='RoPESwin', arch=dict(embed_dims=16, depths=(1, 1), num_heads=(1, 2)), rope='mixed', " \
       "window_size=4, use_rpb=True, out_indices=(1,), init_cfg=None)"


def _config(tmp_path, data_root: str, *, backbone: str = VIT, channels: int = 32, model_type: str = 'EncoderDecoder',
            name: str = 'tiny.py') -> str:
    """A complete tiny mmseg config (no _base_): backbone + FCN head, generated ADE set, IoUMetric."""
    text = f"""
default_scope = 'mmseg'
custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)
model = dict(
    type={model_type!r},
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
    backbone={backbone},
    decode_head=dict(type='FCNHead', in_channels={channels}, in_index=0, channels=16, num_convs=1,
                     concat_input=False, num_classes=150, norm_cfg=dict(type='BN', requires_grad=True),
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='slide', crop_size=(16, 16), stride=(8, 8)))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=({SIZE}, {SIZE}), keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='ADE20KDataset', data_root={data_root!r},
                                    data_prefix=dict(img_path='images/validation',
                                                     seg_map_path='annotations/validation'),
                                    pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_cfg = dict(type='TestLoop')
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'), dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
"""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _checkpoint(config: str, path) -> str:
    """Random weights whose classifier prefers the 3 classes of the set (so mIoU is not trivially 0)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    import ropevit.mm  # noqa: F401
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    model.init_weights()
    with torch.no_grad():
        model.decode_head.conv_seg.bias[3:] = -20.0
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, str(path))
    return str(path)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('extrap')
    data_root = _make_ade_set(tmp / 'ade')
    config = _config(tmp, data_root)
    return dict(tmp=tmp, data_root=data_root, config=config, checkpoint=_checkpoint(config, tmp / 'tiny.pth'))


@pytest.mark.timeout(60)
def test_sweep_gives_one_row_per_scale_with_finite_metrics(tiny, tmp_path):
    scales = [0.5, 1.0, 2.0]
    spec = sweep.ModelSpec(tiny['config'], tiny['checkpoint'], 'tiny-ape')
    result = sweep.sweep([spec], scales, work_dir=str(tmp_path), log=lambda _: None)
    assert result.metric == 'mIoU' and result.columns == ['tiny-ape']
    assert len(result.values['tiny-ape']) == len(scales)
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in result.values['tiny-ape'])
    # whole-image inference: the backbone sees the resized image (the config's slide mode is replaced)
    assert [sweep._most_common(hw) for hw in result.input_hw['tiny-ape']] == [(16, 16), (32, 32), (64, 64)]
    paths = sweep.write_outputs(result, str(tmp_path / 'out'))
    rows = [r for r in open(paths['table']).read().splitlines() if r.startswith('| ') and 'x |' in r]
    assert [r.split('|')[1].strip() for r in rows] == ['0.5x', '1x', '2x']
    with open(paths['plot'], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.timeout(60)
def test_larger_scale_changes_the_input_the_backbone_sees(tiny, tmp_path):
    runner = sweep.build_runner(sweep.ModelSpec(tiny['config'], tiny['checkpoint'], 'tiny'), work_dir=str(tmp_path))
    model = sweep.unwrap(runner.model)
    shapes: list[tuple[int, ...]] = []
    model.backbone.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    metrics_1x, _ = sweep.evaluate_at_scale(runner, 1.0)
    assert shapes == [(1, 3, SIZE, SIZE)] * 2
    shapes.clear()
    sweep.evaluate_at_scale(runner, 1.5)
    assert shapes == [(1, 3, 48, 48)] * 2                             # 1.5 x 32, both images

    # 1x is exactly what mmengine's own Runner.test() reports with the checkpoint (whole mode)
    from mmengine.runner import Runner
    cfg = Config.fromfile(tiny['config'])
    cfg.model.test_cfg = dict(mode='whole')
    cfg.work_dir, cfg.load_from = str(tmp_path / 'plain'), tiny['checkpoint']
    plain = Runner.from_cfg(cfg).test()
    assert metrics_1x['mIoU'] == pytest.approx(plain['mIoU'])


def test_scale_pipeline_multiplies_resize_and_rejects_pipelines_without_it():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(2048, 512), keep_ratio=True),
                dict(type='mmdet.Resize', scale_factor=0.5)]
    out = sweep.scale_pipeline(pipeline, 0.5)
    assert out[1]['scale'] == (1024, 256) and out[2]['scale_factor'] == 0.25
    assert pipeline[1]['scale'] == (2048, 512)                        # input untouched
    with pytest.raises(ValueError, match='no Resize'):
        sweep.scale_pipeline([dict(type='LoadImageFromFile')], 2.0)
    with pytest.raises(ValueError, match='> 0'):
        sweep.scale_pipeline(pipeline, 0.0)


def test_unknown_model_type_is_a_clear_error(tiny, tmp_path):
    config = _config(tmp_path, tiny['data_root'], model_type='MySegmentor')
    with pytest.raises(ValueError, match=r"unknown model type 'MySegmentor'.*known: .*EncoderDecoder"):
        sweep.build_runner(sweep.ModelSpec(config, tiny['checkpoint'], 'x'), work_dir=str(tmp_path))
    # a registered module that is not a segmentor is refused too
    config = _config(tmp_path, tiny['data_root'], model_type='FCNHead', name='head.py')
    with pytest.raises(ValueError, match="unknown model type 'FCNHead'"):
        sweep.build_runner(sweep.ModelSpec(config, tiny['checkpoint'], 'x'), work_dir=str(tmp_path))


def test_config_of_another_scope_is_a_clear_error(tmp_path):
    path = tmp_path / 'cls.py'
    path.write_text("default_scope = 'mmpretrain'\nmodel = dict(type='ImageClassifier')\n")
    with pytest.raises(ValueError, match=r"default_scope='mmpretrain'.*\['mmdet', 'mmseg'\]"):
        sweep.prepare_config(str(path), work_dir=str(tmp_path))


def test_checkpoint_of_another_config_is_a_clear_error(tiny, tmp_path):
    wider = _config(tmp_path, tiny['data_root'], name='wider.py',
                    backbone=VIT.replace('embed_dims=32', 'embed_dims=48'), channels=48)
    with pytest.raises(sweep.CheckpointConfigMismatchError,
                       match=r'does not match the model of .*wider\.py: shape mismatches .*backbone\.cls_token: '
                             r'checkpoint \(1, 1, 32\) vs model \(1, 1, 48\)'):
        sweep.build_runner(sweep.ModelSpec(wider, tiny['checkpoint'], 'x'), work_dir=str(tmp_path))
    # keys missing from the checkpoint are named as well
    state = torch.load(tiny['checkpoint'], weights_only=True)['state_dict']
    del state['decode_head.conv_seg.weight']
    torch.save({'state_dict': state}, str(tmp_path / 'partial.pth'))
    with pytest.raises(sweep.CheckpointConfigMismatchError, match=r"missing keys \['decode_head\.conv_seg\.weight'\]"):
        sweep.build_runner(sweep.ModelSpec(tiny['config'], str(tmp_path / 'partial.pth'), 'x'), work_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        sweep.build_runner(sweep.ModelSpec(tiny['config'], str(tmp_path / 'nope.pth'), 'x'), work_dir=str(tmp_path))


def test_window_size_option_evaluates_windowed_backbones_with_another_window(tiny, tmp_path):
    config = _config(tmp_path, tiny['data_root'], backbone=SWIN, channels=32, name='swin.py')
    checkpoint = _checkpoint(config, tmp_path / 'swin.pth')
    result = sweep.sweep([sweep.ModelSpec(config, checkpoint, 'swin'),
                          sweep.ModelSpec(tiny['config'], tiny['checkpoint'], 'vit')],
                         [1.0], work_dir=str(tmp_path), window_size=2, log=lambda _: None)
    # the ViT of this config has no window: it gets no extra column
    assert result.columns == ['swin', 'swin (window 2)', 'vit']
    assert all(math.isfinite(v[0]) for v in result.values.values())
    runner = sweep.build_runner(sweep.ModelSpec(config, checkpoint, 'swin'), work_dir=str(tmp_path), window_size=2)
    backbone = sweep.unwrap(runner.model).backbone
    assert backbone.window_size == 2
    trained = torch.load(checkpoint, weights_only=True)['state_dict']
    tables = [k for k in trained if k.endswith('relative_position_bias_table')]
    assert tables and all(trained[k].shape[0] == 7 * 7 for k in tables)      # (2*4-1)^2 rows
    resized = sweep.unwrap(runner.model).state_dict()
    assert all(resized[k].shape[0] == 3 * 3 for k in tables)                  # (2*2-1)^2 rows
    with pytest.raises(ValueError, match="backbone 'VisionTransformer' .* has no window_size"):
        sweep.prepare_config(tiny['config'], work_dir=str(tmp_path), window_size=2)


# --------------------------------------------------------------------------------------------
# detection: the same sweep with mmdet's CocoMetric on a generated COCO-format set
# --------------------------------------------------------------------------------------------
def _make_coco_set(root, *, count: int = 2, size: int = 64) -> str:
    """COCO json + JPEGs: each image holds two coloured rectangles of two categories."""
    import json
    from PIL import Image
    (root / 'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(count):
        image = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        for cat, (x, y, w, h) in ((1, (4 + i, 6, 20, 16)), (2, (34, 30 - i, 24, 28))):
            image[y:y + h, x:x + w] = (220, 40, 40) if cat == 1 else (40, 40, 220)
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=cat, bbox=[x, y, w, h],
                                    area=w * h, iscrowd=0))
        Image.fromarray(image).save(root / 'images' / f'{i}.jpg', quality=95)
        images.append(dict(id=i + 1, file_name=f'{i}.jpg', height=size, width=size))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=1, name='red'), dict(id=2, name='blue')])
    (root / 'val.json').write_text(json.dumps(coco))
    return str(root)


def _det_config(tmp_path, data_root: str) -> str:
    text = f"""
default_scope = 'mmdet'
custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone={SWIN.replace('out_indices=(1,)', 'out_indices=(0, 1)')},
    neck=dict(type='FPN', in_channels=[16, 32], out_channels=16, start_level=0, num_outs=2),
    bbox_head=dict(type='RetinaHead', num_classes=2, in_channels=16, stacked_convs=1, feat_channels=16,
                   anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                         ratios=[1.0], strides=[4, 8]),
                   bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
                   loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=50))
metainfo = dict(classes=('red', 'blue'))
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='CocoDataset', data_root={data_root!r}, ann_file='val.json',
                                    data_prefix=dict(img='images/'), metainfo=metainfo, test_mode=True,
                                    pipeline=[dict(type='LoadImageFromFile'),
                                              dict(type='Resize', scale=(64, 64), keep_ratio=True),
                                              dict(type='LoadAnnotations', with_bbox=True),
                                              dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                   'img_shape', 'scale_factor'))]))
test_evaluator = dict(type='CocoMetric', ann_file={data_root + '/val.json'!r}, metric='bbox')
test_cfg = dict(type='TestLoop')
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'), dist_cfg=dict(backend='gloo'))
"""
    path = tmp_path / 'det.py'
    path.write_text(text)
    return str(path)


@pytest.mark.timeout(60)
def test_detection_sweep_uses_coco_metric_and_resizes_the_input(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    import ropevit.mm  # noqa: F401
    config = _det_config(tmp_path, _make_coco_set(tmp_path / 'coco'))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    torch.save({'state_dict': MODELS.build(Config.fromfile(config).model).state_dict()}, str(tmp_path / 'det.pth'))
    result = sweep.sweep([sweep.ModelSpec(config, str(tmp_path / 'det.pth'), 'det')], [0.5, 1.5],
                         work_dir=str(tmp_path), log=lambda _: None)
    assert result.metric == 'coco/bbox_mAP'
    assert len(result.values['det']) == 2 and all(math.isfinite(v) and 0 <= v <= 1 for v in result.values['det'])
    # 64 px images: 32 and 96 px, padded by the data preprocessor to a multiple of 32
    assert [sweep._most_common(hw) for hw in result.input_hw['det']] == [(32, 32), (96, 96)]


# --------------------------------------------------------------------------------------------
# --rope-coords and --data-prefix
# --------------------------------------------------------------------------------------------
ROPE_SWIN = SWIN.replace("use_rpb=True", "use_rpb=False, rope_ref_size=32").replace("rope='mixed'", "rope='axial'")


def _sharp_checkpoint(config: str, path) -> str:
    """As :func:`_checkpoint`, with sharp attention (qkv x 15) so positions change the logits."""
    path = _checkpoint(config, path)
    ckpt = torch.load(path, weights_only=True)
    for k, v in ckpt['state_dict'].items():
        if k.endswith('qkv.weight'):
            v.mul_(15)
    torch.save(ckpt, path)
    return path


@pytest.mark.timeout(120)
def test_rope_coords_option_sweeps_trained_checkpoints_without_retraining(tiny, tmp_path):
    config = _config(tmp_path, tiny['data_root'], backbone=ROPE_SWIN, channels=32, name='rope_swin.py')
    checkpoint = _sharp_checkpoint(config, tmp_path / 'rope_swin.pth')
    result = sweep.sweep([sweep.ModelSpec(config, checkpoint, 'swin'),
                          sweep.ModelSpec(tiny['config'], tiny['checkpoint'], 'vit')],
                         [1.0, 2.0], work_dir=str(tmp_path), rope_coords=['index', 'interpolate'], log=lambda _: None)
    # 'index' is what it was trained with (no extra column); mmseg's ViT has no RoPE (none either)
    assert result.columns == ['swin', 'swin (interpolate)', 'vit']
    # at the reference size (32 px = the 1x input) 'interpolate' is 'index', exactly
    assert result.values['swin (interpolate)'][0] == result.values['swin'][0]
    runner = sweep.build_runner(sweep.ModelSpec(config, checkpoint, 'swin'), work_dir=str(tmp_path / 'b'),
                                rope_coords='interpolate')
    backbone = sweep.unwrap(runner.model).backbone
    assert backbone.rope_coords == 'interpolate' and backbone.rope_ref_size == (32, 32)
    # at 2x the logits differ from 'index' (the coordinates are halved)
    plain = sweep.build_runner(sweep.ModelSpec(config, checkpoint, 'swin'), work_dir=str(tmp_path / 'c'))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = sweep.unwrap(plain.model).backbone(x), backbone(x)
    assert (a[-1] - b[-1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"--rope-coords interpolate: backbone 'VisionTransformer' .* has no RoPE"):
        sweep.prepare_config(tiny['config'], work_dir=str(tmp_path), rope_coords='interpolate')
    # --rope-coords-models: only the named models get the extra columns
    specs = [sweep.ModelSpec(config, checkpoint, 'a'), sweep.ModelSpec(config, checkpoint, 'b')]
    result = sweep.sweep(specs, [1.0], work_dir=str(tmp_path / 'd'), rope_coords=['interpolate'],
                         rope_coords_models=['b'], log=lambda _: None)
    assert result.columns == ['a', 'b', 'b (interpolate)']
    with pytest.raises(ValueError, match=r"--rope-coords-models: \['c'\] are not model names"):
        sweep.sweep(specs, [1.0], work_dir=str(tmp_path), rope_coords=['interpolate'], rope_coords_models=['c'])


def test_rope_coords_switch_drops_the_training_augmentation():
    backbone = dict(type='RoPEViT', rope='axial', rope_coords='normalized', rope_coords_aug=dict(rescale=2.0))
    sweep.set_rope_coords(backbone, 'interpolate', 64)
    assert backbone == dict(type='RoPEViT', rope='axial', rope_coords='interpolate', rope_ref_size=64)
    with pytest.raises(ValueError, match="rope_coords='grid'"):
        sweep.set_rope_coords(backbone, 'grid')


@pytest.mark.timeout(60)
def test_data_prefix_evaluates_each_scale_on_its_own_split(tiny, tmp_path):
    """Split B is split A with every label changed to another class: at the same scale, the
    metric on B must differ from A's, and a copy of A must give A's exactly."""
    import shutil
    from PIL import Image
    root = osp.join(tiny['data_root'])
    for name, relabel in (('copy', False), ('other', True)):
        for kind in ('images', 'annotations'):
            shutil.copytree(osp.join(root, kind, 'validation'), osp.join(root, kind, f'validation_{name}'),
                            dirs_exist_ok=True)
        if relabel:
            for f in sorted(os.listdir(osp.join(root, 'annotations', 'validation_other'))):
                path = osp.join(root, 'annotations', 'validation_other', f)
                label = np.array(Image.open(path))
                Image.fromarray(np.where(label > 0, 4 - label, 0).astype(np.uint8)).save(path)   # 1 <-> 3
    prefixes = [dict(img_path=f'images/{s}', seg_map_path=f'annotations/{s}')
                for s in ('validation', 'validation_copy', 'validation_other')]
    spec = sweep.ModelSpec(tiny['config'], tiny['checkpoint'], 'vit')
    result = sweep.sweep([spec], [1.0, 1.0, 1.0], work_dir=str(tmp_path), data_prefixes=prefixes, log=lambda _: None)
    a, copy_, other = result.values['vit']
    assert copy_ == a and other != a
    with pytest.raises(ValueError, match='2 data prefixes for 3 scales'):
        sweep.sweep([spec], [1.0, 1.0, 1.0], work_dir=str(tmp_path), data_prefixes=prefixes[:2], log=lambda _: None)
    runner = sweep.build_runner(spec, work_dir=str(tmp_path / 'm'))
    with pytest.raises(FileNotFoundError, match=r'validation_96 is not a folder .*make_data\.py'):
        sweep.evaluate_at_scale(runner, 1.5, dict(img_path='images/validation_96', seg_map_path='annotations/x'))


# --------------------------------------------------------------------------------------------
# the study: its data, and configs that differ only where they should
# --------------------------------------------------------------------------------------------
STUDY = osp.join(ROOT, 'projects', 'resolution_extrapolation')


def _study_module(name: str):
    spec = importlib.util.spec_from_file_location(f'extrapolation_{name}', osp.join(STUDY, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: arm -> the backbone keys it sets (everything else must be the base config's)
ARM_BACKBONE = {
    'NoPE': dict(rope='none', use_ape=False),
    'APE': dict(rope='none', use_ape=True),
    'RoPE-Axial': dict(rope='axial', use_ape=False),
    'RoPE-Mixed': dict(rope='mixed', use_ape=False),
    'RoPE-Mixed + APE': dict(rope='mixed', use_ape=True),
    'RoPE-Axial normalized': dict(rope='axial', use_ape=False, rope_coords='normalized',
                                  rope_coords_aug=dict(rescale=2.0)),
    'RoPE-Mixed normalized': dict(rope='mixed', use_ape=False, rope_coords='normalized',
                                  rope_coords_aug=dict(rescale=2.0)),
}


def test_study_configs_differ_only_in_the_position_encoding_and_build():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    import ropevit.mm  # noqa: F401
    init_default_scope('mmseg')
    arms = _study_module('run_study').ARMS
    assert set(arms) == set(ARM_BACKBONE)
    base = Config.fromfile(osp.join(STUDY, 'configs', '_base_', 'quadrants_vit-tiny-p8_fcn1x1-64.py')).to_dict()
    assert base['model']['decode_head']['kernel_size'] == 1 and base['model']['decode_head']['num_convs'] == 1
    assert not any(t['type'] == 'RandomFlip' for t in base['train_pipeline'])      # a flip would change labels
    for arm, config in arms.items():
        cfg = Config.fromfile(osp.join(STUDY, 'configs', config)).to_dict()
        set_keys = {k: v for k, v in cfg['model']['backbone'].items() if base['model']['backbone'].get(k) != v}
        assert set_keys == {k: v for k, v in ARM_BACKBONE[arm].items()
                            if base['model']['backbone'].get(k) != v}, arm
        cfg['model']['backbone'] = base['model']['backbone']
        assert cfg == base, arm                                                    # same data, model, budget
        model = MODELS.build(Config.fromfile(osp.join(STUDY, 'configs', config)).model).eval()
        bb = model.backbone
        assert (bb.rope_type, bb.pos_embed is not None) == (ARM_BACKBONE[arm]['rope'], ARM_BACKBONE[arm]['use_ape'])
        with torch.no_grad():
            for size in (32, 64, 128):
                logits = model.encode_decode(torch.randn(1, 3, size, size), [dict(img_shape=(size, size))])
                assert logits.shape == (1, 5, size, size)


def test_quadrant_scenes_label_squares_by_their_side_of_the_anchor_and_look_alike(tmp_path):
    """Independent of the generator's own bookkeeping: the anchor is found as the red pixels, the
    squares as the other labelled components; each square's label must be its quadrant, and squares
    of different classes must have the same colour."""
    from PIL import Image
    from scipy import ndimage
    make_data = _study_module('make_data')
    root = make_data.make_dataset(str(tmp_path / 'q'), num_train=4, num_val=6, scene_sizes=(128,), seed=3)
    for split, size in (('validation', 64), ('validation_128', 128)):
        files = sorted(os.listdir(osp.join(root, 'annotations', split)))
        assert len(files) == 6
        colours = {c: [] for c in range(2, 6)}
        for f in files:
            label = np.array(Image.open(osp.join(root, 'annotations', split, f)))
            image = np.array(Image.open(osp.join(root, 'images', split, f.replace('.png', '.jpg')))).astype(float)
            assert label.shape == (size, size) and set(np.unique(label)) <= set(range(6))
            ys, xs = np.nonzero(label == 1)
            assert image[ys, xs, 0].mean() > 150 > image[ys, xs, 1].mean()          # the red anchor
            ay, ax = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
            comps, n = ndimage.label(label > 1)
            assert n >= (2 if size == 64 else 6)
            for k in range(1, n + 1):
                cy, cx = [v.mean() for v in np.nonzero(comps == k)]
                cls = set(np.unique(label[comps == k]))
                assert len(cls) == 1
                expected = 2 + 2 * (cy > ay) + (cx > ax)        # above-left, above-right, below-left, below-right
                assert cls == {expected}, (f, k)
                colours[expected].append(image[comps == k].mean(0))
        means = np.array([np.mean(v, 0) for v in colours.values() if v])
        assert np.ptp(means, 0).max() < 25                                          # no class has its own look


def test_aggregate_averages_seeds_and_refuses_mismatched_sweeps(tmp_path):
    import json
    spec = importlib.util.spec_from_file_location(
        'extrapolation_aggregate', osp.join(ROOT, 'projects', 'resolution_extrapolation', 'aggregate.py'))
    aggregate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aggregate)
    runs = [dict(metric='mIoU', scales=[0.5, 1.0, 2.0], columns=['A', 'B'],
                 values=dict(A=[10.0, 20.0, 30.0], B=[1.0, 2.0, 3.0])),
            dict(metric='mIoU', scales=[0.5, 1.0, 2.0], columns=['A', 'B'],
                 values=dict(A=[12.0, 22.0, 26.0], B=[1.0, 2.0, 3.0]))]
    paths = []
    for i, r in enumerate(runs):
        paths.append(str(tmp_path / f'{i}.json'))
        with open(paths[-1], 'w') as f:
            json.dump(r, f)
    metric, scales, columns, values = aggregate.load(paths)
    table = aggregate.to_markdown(metric, scales, columns, values)
    assert '| 2x | 28.0 ± 2.8 | 3.0 ± 0.0 |' in table                  # mean, sample std (ddof=1)
    assert '| 2x | +7.0 | +1.0 |' in table                              # (30-20 + 26-22) / 2
    runs[1]['scales'] = [0.5, 1.0, 1.5]
    with open(paths[1], 'w') as f:
        json.dump(runs[1], f)
    with pytest.raises(ValueError, match='differ from'):
        aggregate.load(paths)


def test_aggregate_reports_the_margin_over_the_control_paired_by_seed():
    spec = importlib.util.spec_from_file_location(
        'extrapolation_aggregate', osp.join(ROOT, 'projects', 'resolution_extrapolation', 'aggregate.py'))
    aggregate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aggregate)
    values = np.array([[[90.0, 60.0], [35.0, 34.0]],          # seed 0: columns A, NoPE; scales 1, 2
                       [[80.0, 50.0], [31.0, 30.0]]])         # seed 1
    table = aggregate.to_markdown('mIoU', [1.0, 2.0], ['A', 'NoPE'], values, row_header='scene', control='NoPE')
    assert '| scene | A | NoPE |' in table
    # per seed 90 - 35 = 55 and 80 - 31 = 49: mean 52, sample std 4.24, min 49
    assert '| margin | +52.0 ± 4.2, min +49.0 |' in table
    paired = aggregate.to_markdown('mIoU', [1.0, 2.0], ['A', 'NoPE'], values, pairs=[('A', 'NoPE')])
    # scale 2: 60 - 34 = 26 and 50 - 30 = 20: mean 23, sample std 4.24, A ahead on both seeds
    assert '| 2x | +23.0 ± 4.2 (2/2) |' in paired
    with pytest.raises(ValueError, match=r"pair \('A', 'B'\)"):
        aggregate.to_markdown('mIoU', [1.0, 2.0], ['A', 'NoPE'], values, pairs=[('A', 'B')])
    with pytest.raises(ValueError, match="control column 'X'"):
        aggregate.to_markdown('mIoU', [1.0, 2.0], ['A', 'NoPE'], values, control='X')
