"""Every segmentation config builds: the model (full size, with a small forward pass through backbone,
neck and heads) and its train / test pipelines on a generated ADE20k-layout set."""
from __future__ import annotations

import glob
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ropevit.mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG_CONFIGS = sorted(
    [p for p in glob.glob(osp.join(ROOT, 'configs', '*ade20k*.py'))] +
    [p for p in glob.glob(osp.join(ROOT, 'configs', 'demo', '*seg*.py'))])
EXPECTED = {                      # backbone type, arch, rope, decode head
    'upernet_rope_swin_t_ade20k.py': ('RoPESwin', 'tiny', 'mixed', 'UPerHead'),
    'upernet_rope_swin_t_axial_ade20k.py': ('RoPESwin', 'tiny', 'axial', 'UPerHead'),
    'upernet_rope_swin_s_ade20k.py': ('RoPESwin', 'small', 'mixed', 'UPerHead'),
    'upernet_rope_swin_b_ade20k.py': ('RoPESwin', 'base', 'mixed', 'UPerHead'),
    'upernet_rope_vit_s_ade20k.py': ('RoPEViT', 'small', 'mixed', 'UPerHead'),
    'upernet_rope_vit_s_axial_ade20k.py': ('RoPEViT', 'small', 'axial', 'UPerHead'),
    'upernet_rope_vit_b_ade20k.py': ('RoPEViT', 'base', 'mixed', 'UPerHead'),
    'upernet_rope_vit_b_axial_ade20k.py': ('RoPEViT', 'base', 'axial', 'UPerHead'),
    'mask2former_rope_swin_t_ade20k.py': ('RoPESwin', 'tiny', 'mixed', 'Mask2FormerHead'),
}


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory) -> str:
    from ropevit.data.synthetic_ade import make_synthetic_ade
    return str(make_synthetic_ade(tmp_path_factory.mktemp('ade'), num_train=2, num_val=2, image_size=(60, 84)))


def _full_size_channels(backbone: dict) -> list[int]:
    """Channels of the 4 maps the config's backbone gives at full size (from the presets, not the config)."""
    if backbone.type == 'RoPESwin':
        from ropevit.models.swin import resolve_arch
        dims = resolve_arch(backbone.arch, embed_dims=backbone.get('embed_dims'), depths=backbone.get('depths'),
                            num_heads=backbone.get('num_heads'))[0]
        return [dims * 2 ** i for i in backbone.out_indices]
    from ropevit.models.vit import resolve_vit_arch
    return [resolve_vit_arch(backbone.arch)['embed_dims']] * len(backbone.out_indices)


def _shrink(model: dict) -> None:
    """Same structure (depths, out indices, neck, heads), narrow widths: a build + forward in seconds."""
    b = model.backbone
    if b.type == 'RoPESwin':
        from ropevit.models.swin import resolve_arch
        depths = resolve_arch(b.arch)[1]
        b.arch = dict(embed_dims=16, depths=depths, num_heads=(1, 2, 4, 8))
        chans = [16, 32, 64, 128]
    else:
        from ropevit.models.vit import resolve_vit_arch
        b.arch = dict(embed_dims=32, num_heads=2, depth=resolve_vit_arch(b.arch)['depth'])
        chans = [32] * 4
        model.neck.in_channels, model.neck.out_channels = chans, 32
    model.decode_head.in_channels = chans
    if model.decode_head.type == 'UPerHead':
        model.decode_head.channels = 32
    if model.get('auxiliary_head'):
        model.auxiliary_head.in_channels = chans[model.auxiliary_head.in_index]
        model.auxiliary_head.channels = 16


def _load(path: str, data_root: str) -> Config:
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(path)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = data_root
    return cfg


def test_all_configs_are_covered():
    names = {osp.basename(p) for p in SEG_CONFIGS}
    assert set(EXPECTED) <= names, sorted(set(EXPECTED) - names)
    assert any('demo' in p for p in SEG_CONFIGS)


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=osp.basename)
def test_config_builds_model_and_pipelines(path, ade_root):
    from mmseg.registry import DATASETS, MODELS
    cfg = _load(path, ade_root)
    assert cfg.default_scope == 'mmseg'
    assert 'ropevit.mm' in cfg.custom_imports['imports']
    name = osp.basename(path)
    if name in EXPECTED:
        backbone, arch, rope, head = EXPECTED[name]
        assert (cfg.model.backbone.type, cfg.model.backbone.arch, cfg.model.backbone.rope,
                cfg.model.decode_head.type) == (backbone, arch, rope, head)
        assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.model.decode_head.num_classes == 150
        assert cfg.model.data_preprocessor.size == (512, 512)
        # sliding-window inference is one override away
        assert cfg.model.test_cfg.crop_size == (512, 512) and len(cfg.model.test_cfg.stride) == 2
    init_default_scope('mmseg')
    cfg.model.backbone.init_cfg = None
    assert list(cfg.model.decode_head.in_channels) == _full_size_channels(cfg.model.backbone)
    if name in EXPECTED:
        _shrink(cfg.model)
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()     # SyncBN -> BN on one CPU
    size = (64, 96)                                                    # a small pass: shapes, not accuracy
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = model.extract_feat(x)
        strides = [size[0] // f.shape[-2] for f in feats]
        assert strides == [4, 8, 16, 32], strides                      # the pyramid the heads expect
        assert [f.shape[1] for f in feats] == list(cfg.model.decode_head.in_channels)
        logits = model.encode_decode(x, [dict(img_shape=size, pad_shape=size, ori_shape=size)])
        assert tuple(logits.shape) == (1, cfg.model.decode_head.num_classes, *size)
        if cfg.model.get('auxiliary_head'):
            assert model.auxiliary_head(feats).shape[1] == cfg.model.auxiliary_head.num_classes

    for loader in ('train_dataloader', 'test_dataloader'):
        dataset = DATASETS.build(cfg[loader].dataset)
        assert len(dataset) == 2
        item = dataset[0]
        seg = item['data_samples'].gt_sem_seg.data
        values = set(torch.unique(seg).tolist())
        assert values <= set(range(150)) | {255}, values                 # reduce_zero_label: 0 -> 255
        if loader == 'train_dataloader':
            crop = tuple(cfg.train_pipeline[3]['crop_size']) if name not in EXPECTED else (512, 512)
            shape = tuple(item['inputs'].shape[-2:])
            assert all(a <= c for a, c in zip(shape, crop)), (shape, crop)   # cropped (padded to crop later)


def test_vit_config_uses_layer_decay(ade_root):
    from mmengine.optim import build_optim_wrapper
    cfg = _load(osp.join(ROOT, 'configs', 'upernet_rope_vit_s_ade20k.py'), ade_root)
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert cfg.model.backbone.out_indices == (3, 5, 7, 11)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.arch = dict(embed_dims=32, num_heads=2, depth=12)   # layer ids as ViT-S, small
    for key in ('neck', 'decode_head'):
        cfg.model[key].in_channels = [32] * 4
    cfg.model.neck.out_channels = 32
    cfg.model.auxiliary_head.in_channels = 32
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lrs = {g['lr'] for g in wrapper.optimizer.param_groups}
    base = cfg.optim_wrapper.optimizer.lr
    rate = cfg.optim_wrapper.paramwise_cfg.decay_rate
    assert max(lrs) == pytest.approx(base)
    assert min(lrs) == pytest.approx(base * rate ** 13)                 # patch embed: 14 layer ids (0..13)


def test_missing_ade_root_is_a_clear_error(tmp_path):
    """Same kind of error as detection: the path, the expected layout, how to make demo data."""
    from ropevit.mm.data_check import DatasetNotFoundError, check_datasets
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'upernet_rope_swin_t_ade20k.py'))
    missing = str(tmp_path / 'nowhere' / 'ADEChallengeData2016')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = missing
    with pytest.raises(DatasetNotFoundError) as err:
        check_datasets(cfg)
    msg = str(err.value)
    assert missing in msg
    assert 'images/training' in msg and 'annotations/validation' in msg
    assert 'make demo-seg' in msg
    # a root that exists but lacks the annotation folder names that folder
    root = tmp_path / 'partial'
    (root / 'images' / 'training').mkdir(parents=True)
    cfg.train_dataloader.dataset.data_root = str(root)
    with pytest.raises(DatasetNotFoundError, match='annotations/training'):
        check_datasets(cfg, which=('train_dataloader',))


def test_empty_ade_image_folder_is_explained(tmp_path):
    """An ADE root whose folders exist but hold no images: mmseg fails with numpy's message; the
    explanation the tools print instead names the folder and says it holds no images."""
    from mmseg.registry import DATASETS

    from ropevit.mm.data_check import check_datasets, explain_empty_datasets
    root = tmp_path / 'ADEChallengeData2016'
    for part in ('images', 'annotations'):
        for split in ('training', 'validation'):
            (root / part / split).mkdir(parents=True)
    (root / 'images' / 'training' / 'notes.txt').write_text('not an image')
    cfg = _load(osp.join(ROOT, 'configs', 'upernet_rope_swin_t_ade20k.py'), str(root))
    init_default_scope('mmseg')
    check_datasets(cfg)                                   # the layout is there: no error up front
    with pytest.raises(ValueError, match='need at least one array'):  # mmseg's own words for it
        DATASETS.build(cfg.train_dataloader.dataset)
    msg = explain_empty_datasets(cfg, which=('train_dataloader',))
    assert msg is not None and str(root / 'images' / 'training') in msg and 'no *.jpg images' in msg
    # with images present there is nothing to explain
    (root / 'images' / 'training' / 'a.jpg').write_bytes(b'')
    assert explain_empty_datasets(cfg, which=('train_dataloader',)) is None
