"""The DINO (RoPE-Swin-T, RoPE-ViT-B) and Cascade Mask R-CNN (RoPE-Swin-T) configs run: one training step, one predict.

Each config is loaded as a user would, then shrunk by overrides only (tiny backbone, one encoder/decoder layer,
few queries, 32 px images upscaled to 64 by the pipeline) and pointed at a generated COCO-format set
(ropevit.data.synthetic_coco, three classes). Through mmdet's own dataset, pipeline, data preprocessor and the
config's optimizer wrapper:

* training step: every loss term is finite; every backbone parameter that requires grad (the configs freeze
  none) gets a finite gradient, the learnable RoPE frequencies included; the optimizer step moves them;
* predict: one DetDataSample per image, ``pred_instances`` with ``bboxes [n, 4]`` inside the original image,
  ``scores [n]`` finite, ``labels [n]`` in [0, 3), and for Cascade Mask R-CNN ``masks [n, H, W]`` at the
  original size.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ('circle', 'square', 'triangle')
ORIGINAL, SIZE = 32, 64           # generated images are 32x32; the pipeline resizes them to 64x64


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> Path:
    from ropevit.data.synthetic_coco import make_synthetic_coco
    return make_synthetic_coco(tmp_path_factory.mktemp('coco'), num_train=2, num_val=1,
                               image_size=(ORIGINAL, ORIGINAL), seed=2, max_objects=3)


def _dino(cfg: Config) -> None:
    """One encoder and one decoder layer, a narrow FFN, 20 queries (the 4 levels of a 64 px image hold 85
    tokens, and two-stage DINO picks its queries among them), 3 classes."""
    ffn = dict(feedforward_channels=64)
    cfg.merge_from_dict(dict(model=dict(
        num_queries=20,
        encoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=ffn)),
        decoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=ffn)),
        bbox_head=dict(num_classes=3),
        dn_cfg=dict(group_cfg=dict(num_dn_queries=12)),
        test_cfg=dict(max_per_img=20))))


def _dino_swin(cfg: Config) -> None:
    assert cfg.model.type == 'DINO' and cfg.model.backbone.type == 'RoPESwin'
    cfg.merge_from_dict(dict(model=dict(
        backbone=dict(embed_dims=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4)),
        neck=dict(in_channels=[32, 64, 128]))))
    _dino(cfg)


def _dino_vit(cfg: Config) -> None:
    assert cfg.model.type == 'DINO' and cfg.model.backbone.type == 'RoPEViT'
    cfg.merge_from_dict(dict(model=dict(
        backbone=dict(patch_size=8, pretrain_img_size=SIZE, window_size=4, global_attn_indexes=(1, 3),
                      out_indices=(3,)),
        neck=dict(in_channels=32))))
    cfg.model.backbone.arch = dict(embed_dims=32, depth=4, num_heads=2)
    _dino(cfg)


def _cascade(cfg: Config) -> None:
    assert cfg.model.type == 'CascadeRCNN' and cfg.model.backbone.type == 'RoPESwin'
    width = 32
    cfg.merge_from_dict(dict(model=dict(
        backbone=dict(embed_dims=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4)),
        neck=dict(in_channels=[16, 32, 64, 128], out_channels=width),
        rpn_head=dict(in_channels=width, feat_channels=width),
        roi_head=dict(bbox_roi_extractor=dict(out_channels=width), mask_roi_extractor=dict(out_channels=width),
                      mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=3)))))
    for head in cfg.model.roi_head.bbox_head:                          # one per cascade stage
        head.update(in_channels=width, fc_out_channels=64, num_classes=3)
    cfg.model.test_cfg.rcnn.score_thr = 0.0        # a one-step model is unsure: keep its detections to check


CASES = {'dino_rope_swin_t': _dino_swin, 'dino_rope_vit_b': _dino_vit,
         'cascade_mask_rcnn_rope_swin_t': _cascade}


def _batch(root: Path, *, masks: bool, train: bool) -> dict:
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    load = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=masks),
            dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True)]
    pack = dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
    dataset = DATASETS.build(dict(
        type='CocoDataset', data_root=str(root) + '/', metainfo=dict(classes=CLASSES), pipeline=load + [pack],
        ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True), test_mode=not train))
    return pseudo_collate([dataset[i] for i in range(len(dataset))])


@pytest.mark.parametrize('name', sorted(CASES))
def test_one_train_step_and_predict(name: str, coco_root: Path):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper
    register_all_modules()
    import ropevit.mm  # noqa: F401

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = Config.fromfile(str(ROOT / 'configs' / f'{name}.py'))
        CASES[name](cfg)
        cfg.model.backbone.init_cfg = None                              # no weights offline: from scratch
        model = MODELS.build(cfg.model)
        model.init_weights()
        with_masks = 'mask_head' in cfg.model.get('roi_head', {})
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)  # the config's groups and clipping

        model.train()
        data = model.data_preprocessor(_batch(coco_root, masks=with_masks, train=True), True)
        losses = model(**data, mode='loss')
        bad_terms = {k: v for k, v in losses.items()
                     if not all(torch.isfinite(x.detach()).all() for x in (v if isinstance(v, list) else [v]))}
        assert not bad_terms, bad_terms
        loss, _ = model.parse_losses(losses)
        assert math.isfinite(loss.item()) and loss.item() > 0, loss
        optim_wrapper.backward(loss)

        params = dict(model.backbone.named_parameters())
        frozen = sorted(n for n, p in params.items() if not p.requires_grad)
        assert frozen == [], frozen                                    # frozen_stages=-1 in all three configs
        no_grad = sorted(n for n, p in params.items() if p.grad is None)
        assert no_grad == [], no_grad
        bad_grad = sorted(n for n, p in params.items() if not torch.isfinite(p.grad).all())
        assert bad_grad == [], bad_grad
        rope = [n for n in params if 'rope_freqs' in n or 'rope.freqs' in n]   # Swin per block, ViT shared
        assert rope and all(params[n].grad.abs().sum() > 0 for n in rope), rope   # RoPE-Mixed learns
        before = {n: p.detach().clone() for n, p in params.items()}
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        moved = [n for n, p in params.items() if not torch.equal(before[n], p.detach())]
        assert set(rope) <= set(moved) and len(moved) > len(params) // 2, (len(moved), len(params))
        assert all(torch.isfinite(p).all() for p in params.values())

        model.eval()
        test_batch = _batch(coco_root, masks=False, train=False)
        with torch.no_grad():
            results = model.test_step(test_batch)
    finally:
        torch.set_num_threads(threads)

    assert len(results) == len(test_batch['data_samples'])
    max_det = cfg.model.test_cfg.get('max_per_img') or cfg.model.test_cfg.rcnn.max_per_img
    for sample, given in zip(results, test_batch['data_samples']):
        assert isinstance(sample, DetDataSample) and sample.img_id == given.img_id
        assert tuple(sample.ori_shape) == (ORIGINAL, ORIGINAL)
        pred = sample.pred_instances
        n = len(pred)
        assert 0 < n <= max_det, n
        assert pred.bboxes.shape == (n, 4) and pred.scores.shape == (n,) and pred.labels.shape == (n,)
        assert torch.isfinite(pred.bboxes).all() and torch.isfinite(pred.scores).all()
        assert pred.labels.dtype == torch.int64 and 0 <= pred.labels.min() and pred.labels.max() < len(CLASSES)
        b = pred.bboxes                                                   # xyxy in the original 32x32 image
        assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
        assert b.min() >= 0 and b.max() <= ORIGINAL, b
        if with_masks:
            assert pred.masks.shape == (n, ORIGINAL, ORIGINAL) and pred.masks.dtype == torch.bool
        else:
            assert 'masks' not in pred
