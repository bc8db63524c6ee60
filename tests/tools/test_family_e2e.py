"""The DINOv3 and EVA-02 configs end to end through ``tools/train.py``, from timm's weights.

Each of ``configs/{mask_rcnn,upernet}_{dinov3,eva02}_vit_b*.py``, shrunk in width and depth (the
family's options kept: registers, normalised / interpolated RoPE, SwiGLU, APE, patch 16), starts from
the state dict of timm's own model of that family (random weights, written as ``.safetensors`` for DINOv3
and ``.pth`` for EVA-02, whose 14-pixel patch kernel the loader resizes to the configs' 16), trains a
few iterations on the generated data in a ``tools/train.py`` subprocess and is evaluated there
(mmdet's CocoMetric / mmseg's IoUMetric), once before the first iteration (``e2e_hooks``) and once
after the last. The checks: the load report accounts for every backbone tensor, the loss falls, and the
trained model beats its own start.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from mmengine.config import Config

from test_det_e2e import _common, _data, _heads
from test_seg_e2e import IMAGE_HW
from test_seg_e2e import ITERS as SEG_ITERS
from test_seg_e2e import _config as seg_config

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / 'tests'
DET_SIZE = 128           # 8x8 patches of 16: windows of 4 (2x2 windows), global blocks 1 and 3
DET_ITERS = 60
WIDTH = dict(embed_dim=32, depth=4, num_heads=2)     # timm's names
ARCH = dict(embed_dims=32, depth=4, num_heads=2)     # ropevit's

#: timm model of each family, and the file format its weights are written in.
FAMILIES = {
    'dinov3': ('vit_base_patch16_dinov3', 'safetensors'),
    'eva02': ('eva02_base_patch14_224', 'pth'),
}


@pytest.fixture(scope='module')
def timm_weights(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """``family -> (weights file, number of tensors in timm's state dict)``."""
    out = {}
    folder = tmp_path_factory.mktemp('timm')
    for family, (name, fmt) in FAMILIES.items():
        torch.manual_seed(0)
        sd = timm.create_model(name, pretrained=False, **WIDTH).state_dict()
        path = folder / f'{name}.{fmt}'
        if fmt == 'safetensors':
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        else:
            torch.save(sd, path)
        out[family] = (path, len(sd))
    return out


def _train(config: Path, work_dir: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    run = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir',
                          str(work_dir)], cwd=work_dir.parent, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    return run.stdout + run.stderr


def _scalars(work_dir: Path) -> list[dict]:
    (path,) = work_dir.glob('*/vis_data/scalars.json')
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_load(log: str, family: str, timm_count: int, backbone_count: int) -> None:
    """The backbone loaded every one of its tensors from the timm file; the only keys dropped are
    timm's head and recomputed buffers, and nothing is missing or unexpected."""
    (line,) = re.findall(r'.* -> RoPEViT: loaded .*', log)
    assert f'loaded {backbone_count} tensors' in line, line
    assert 'missing in checkpoint' not in line and 'unexpected in checkpoint' not in line, line
    assert 'q/k channels reordered' in line, line
    if family == 'eva02':
        assert 'patch kernel 14x14 resized to' in line and '16x16' in line, line


def _sweep_module():
    """projects/resolution_extrapolation/sweep.py (a script folder, not a package), once per process."""
    import importlib.util
    name = 'extrapolation_sweep'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / 'projects' / 'resolution_extrapolation' / 'sweep.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module                          # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def _backbone_count(cfg: Config) -> int:
    from mmengine.registry import MODELS, init_default_scope
    import ropevit.mm  # noqa: F401
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    bb = dict(cfg.model.backbone, init_cfg=None)
    return len(MODELS.build(bb).state_dict())


# ---------------------------------------------------------------------------- detection (mmdet)
@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> Path:
    from ropevit.data.synthetic_coco import make_synthetic_coco
    return make_synthetic_coco(tmp_path_factory.mktemp('coco'), num_train=2, num_val=2,
                               image_size=(DET_SIZE, DET_SIZE), seed=3, max_objects=2)


def _det_config(family: str, weights: Path, root: Path, work_dir: Path) -> Config:
    cfg = Config.fromfile(str(ROOT / f'configs/mask_rcnn_{family}_vit_b.py'))
    bb = cfg.model.backbone
    assert bb.type == 'RoPEViT' and bb.preset == family and bb.get('patch_size', 16) == 16
    assert cfg.model.neck.type == 'SimpleFPN' and bb.window_size and bb.global_attn_indexes
    cfg.merge_from_dict(dict(model=dict(
        data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=(DET_SIZE,) * 2, pad_mask=True)]),
        backbone=dict(window_size=4, global_attn_indexes=(1, 3), out_indices=(3,), drop_path_rate=0.0),
        neck=dict(backbone_channel=32, in_channels=[8, 16, 32, 32], out_channels=32))))
    cfg.model.backbone.arch = dict(ARCH)
    _heads(cfg, 32)
    cfg.merge_from_dict(dict(model=dict(            # small objects: the ViTDet e2e test's anchors and samplers
        rpn_head=dict(anchor_generator=dict(scales=[4])),
        train_cfg=dict(rpn=dict(sampler=dict(num=128)), rcnn=dict(sampler=dict(num=64))))))
    cfg.model.roi_head.bbox_head.conv_out_channels = 32
    cfg = _common(cfg, root, work_dir, iters=DET_ITERS, size=DET_SIZE)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(weights))
    cfg.train_cfg.val_interval = DET_ITERS                      # tools/train.py evaluates after the last one
    cfg.custom_imports.imports = [*cfg.custom_imports.imports, 'e2e_hooks']
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='ValBeforeTrainHook')]
    return cfg


@pytest.mark.timeout(600)
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_mask_rcnn_trains_from_timm_weights_and_evaluates(family, timm_weights, coco_root, tmp_path):
    weights, timm_count = timm_weights[family]
    work_dir = tmp_path / 'work'
    cfg = _det_config(family, weights, coco_root, work_dir)
    config = tmp_path / f'tiny_mask_rcnn_{family}.py'
    cfg.dump(str(config))
    log = _train(config, work_dir)
    _check_load(log, family, timm_count, _backbone_count(cfg))

    rows = _scalars(work_dir)
    losses = [r['loss'] for r in rows if 'loss' in r]
    assert len(losses) == DET_ITERS and all(math.isfinite(v) for v in losses), losses
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    evals = [r for r in rows if 'coco/bbox_mAP' in r]
    assert len(evals) == 2, evals                      # before the first iteration and after the last
    untrained, trained = evals
    for task in ('bbox', 'segm'):
        before, after = untrained[f'coco/{task}_mAP_50'], trained[f'coco/{task}_mAP_50']
        assert 0.0 <= before and before + 0.1 < after <= 1.0, (task, untrained, trained)


# ---------------------------------------------------------------------------- segmentation (mmseg)
@pytest.fixture(scope='module')
def ade_root(tmp_path_factory) -> str:
    from ropevit.data.synthetic_ade import make_synthetic_ade
    return str(make_synthetic_ade(tmp_path_factory.mktemp('ade'), num_train=4, num_val=2, image_size=IMAGE_HW))


def _seg_shrink(weights: Path) -> str:
    return f"""
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_heads=2, depth=4), out_indices=(0, 1, 2, 3),
                  drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint={str(weights)!r})),
    neck=dict(in_channels=[32] * 4, out_channels=16),
    decode_head=dict(in_channels=[16] * 4, channels=16, pool_scales=(1, 2), norm_cfg=dict(type='BN')),
    auxiliary_head=dict(in_channels=16, channels=8, norm_cfg=dict(type='BN')))
"""


SEG_EXTRA = """
custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes', 'e2e_hooks'], allow_failed_imports=False)
custom_hooks = [dict(type='RNGStateHook'), dict(type='ValBeforeTrainHook')]
"""


def _seg_config(tmp_path: Path, name: str, weights: Path, root: str) -> tuple[Config, Path]:
    cfg = seg_config(tmp_path, name, root, shrink=_seg_shrink(weights), extra=SEG_EXTRA)
    # a Resize to the images' own size (a no-op at 1x) in the test pipeline, for the extrapolation sweep
    pipeline = cfg.val_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == ['LoadImageFromFile', 'LoadAnnotations', 'PackSegInputs']
    pipeline.insert(1, dict(type='Resize', scale=IMAGE_HW[::-1], keep_ratio=True))
    cfg.test_dataloader = cfg.val_dataloader
    path = tmp_path / f'tiny_{name}'
    cfg.dump(str(path))
    return cfg, path


@pytest.mark.timeout(600)
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_upernet_trains_from_timm_weights_evaluates_and_sweeps(family, timm_weights, ade_root, tmp_path):
    weights, timm_count = timm_weights[family]
    name = f'upernet_{family}_vit_b_ade20k.py'
    cfg, config = _seg_config(tmp_path, name, weights, ade_root)
    assert cfg.model.backbone.preset == family and cfg.val_evaluator.type == 'IoUMetric'
    work_dir = tmp_path / 'work'
    log = _train(config, work_dir)
    _check_load(log, family, timm_count, _backbone_count(cfg))

    rows = _scalars(work_dir)
    losses = [r['loss'] for r in rows if 'loss' in r]
    assert len(losses) == SEG_ITERS and all(math.isfinite(v) for v in losses), losses
    evals = [r for r in rows if 'mIoU' in r]
    assert len(evals) == 2, evals
    untrained, trained = evals
    assert trained['mIoU'] > untrained['mIoU'] + 5 and trained['aAcc'] > untrained['aAcc'] + 20, (untrained,
                                                                                                   trained)

    # The extrapolation sweep runs the trained checkpoint: at 1x it is tools/train.py's evaluation again,
    # at 1.5x the backbone sees the 1.5x image.
    sweep = _sweep_module()
    (checkpoint,) = work_dir.glob(f'iter_{SEG_ITERS}.pth')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                    # as in the training subprocess: the same sums
    try:
        result = sweep.sweep([sweep.ModelSpec(str(config), str(checkpoint), family)],
                             [1.0, 1.5], work_dir=str(tmp_path / 'sweep'), log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert result.metric == 'mIoU' and result.values[family][0] == trained['mIoU'], (result.values, trained)
    h, w = IMAGE_HW
    assert [sweep._most_common(hw) for hw in result.input_hw[family]] == [(h, w), (round(1.5 * h), round(1.5 * w))]


# ---------------------------------------------------------------------------- the model zoo's weights
ZOO = ['mask_rcnn_dinov3_vit_b.py', 'mask_rcnn_eva02_vit_b.py', 'upernet_dinov3_vit_b_ade20k.py',
       'upernet_eva02_vit_b_ade20k.py']


def _zoo_weight(config: str) -> str:
    """The timm weight configs/README.md names for ``config`` (``model.tag``)."""
    rows = [r for r in (ROOT / 'configs' / 'README.md').read_text().splitlines() if r.startswith(f'| `{config}` ')]
    assert len(rows) == 1, (config, rows)
    (weight,) = re.findall(r'timm `([\w.]+)`', rows[0])
    return weight


@pytest.mark.parametrize('config', ZOO)
def test_zoo_config_loads_the_full_size_timm_weight_it_names(config, tmp_path):
    """At full size, every tensor of the timm model the zoo row names is loaded by the config's backbone."""
    from mmengine.registry import MODELS, init_default_scope
    import ropevit.mm  # noqa: F401
    weight = _zoo_weight(config)
    torch.manual_seed(0)
    sd = timm.create_model(weight.split('.')[0], pretrained=False).state_dict()
    path = tmp_path / f'{weight}.safetensors'
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    cfg.model.backbone.init_cfg.checkpoint = str(path)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    report = backbone.load_report
    assert sorted(report.loaded) == sorted(backbone.state_dict()) and not report.missing and not report.unexpected
    assert set(report.dropped) <= {'head.weight', 'head.bias', 'fc_norm.weight', 'fc_norm.bias'}, report.dropped
