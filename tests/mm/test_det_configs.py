"""Every detection config in configs/ builds its model and its train/val data pipelines.

Data paths are redirected to a tiny generated COCO-format set (ropevit.data.synthetic_coco); one sample
is pulled through each pipeline, so transforms, metainfo and the dataset type are all exercised.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[2]


def _detection_configs() -> list[Path]:
    found = []
    for path in sorted(ROOT.glob('configs/*.py')) + sorted(ROOT.glob('configs/demo/*.py')):
        if Config.fromfile(str(path)).get('default_scope', 'mmdet') == 'mmdet':
            found.append(path)
    return found


CONFIGS = _detection_configs()


def test_expected_detection_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {'mask_rcnn_rope_swin_t.py', 'mask_rcnn_rope_swin_t_3x.py', 'mask_rcnn_rope_swin_t_axial.py',
            'cascade_mask_rcnn_rope_swin_t.py', 'mask_rcnn_rope_vit_b.py', 'dino_rope_vit_b.py',
            'dino_rope_swin_t.py', 'mask_rcnn_rope_swin_demo.py'} <= names


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> Path:
    from ropevit.data.synthetic_coco import make_synthetic_coco
    return make_synthetic_coco(tmp_path_factory.mktemp('coco'), num_train=2, num_val=2, image_size=(96, 96))


def _redirect(cfg: Config, root: Path) -> None:
    for key, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'), ('test_dataloader', 'val')):
        ds = cfg[key].dataset
        while 'dataset' in ds:  # RepeatDataset and friends
            ds = ds.dataset
        ds.data_root = str(root) + '/'
        ds.ann_file = f'annotations/instances_{split}2017.json'
        ds.data_prefix = dict(img=f'{split}2017/')
        ds.metainfo = dict(classes=('circle', 'square', 'triangle'))


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_model_and_pipeline(path: Path, coco_root: Path):
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    import ropevit.mm  # noqa: F401

    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ['ropevit.mm', 'ropevit.mm.fixes']
    assert cfg.model.backbone.type in ('RoPESwin', 'RoPEViT')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    assert sum(p.numel() for p in model.parameters()) > 0

    _redirect(cfg, coco_root)
    for key in ('train_dataloader', 'val_dataloader'):
        dataset = DATASETS.build(cfg[key].dataset)
        sample = dataset[0]
        assert sample['inputs'].ndim == 3 and sample['inputs'].shape[0] == 3, key
        assert sample['data_samples'].img_path.startswith(str(coco_root)), key
