"""Known answers through the metrics the evaluator runs: mmdet's CocoMetric (pycocotools) and mmseg's IoUMetric.

The ground truth of a generated set (ropevit.data.synthetic_coco / synthetic_ade), fed back as the prediction,
must score bbox and segm AP 1.0 and mIoU 100. Then a few predictions are spoiled in ways whose result follows
from the metrics' definitions alone, computed here by hand:

* COCO AP (Lin et al. 2014; pycocotools) of one category is the mean, over the 10 IoU thresholds
  0.50:0.05:0.95, of the interpolated precision (the best precision at any recall >= r) at the 101 recall
  points r = 0, 0.01, ..., 1, where a recall point beyond the largest recall reached counts 0; mAP is the mean
  over the categories that have ground truth.
* IoU of a class is |pred == c and gt == c| / |pred == c or gt == c| over the pixels whose ground truth is not
  the ignore index; mIoU is the mean over the classes where the union is not empty.

The metrics are called the way mmengine's Evaluator calls them: ``metric.dataset_meta = ...``,
``metric.process(data_batch, data_samples)``, ``metric.evaluate(n)``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

COCO_CLASSES = ('circle', 'square', 'triangle')
RECALL_POINTS = 101
IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]


# --------------------------------------------------------------------------------------------
# COCO: bbox and segm AP
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def coco_gt(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The generated val split and, per image, its ground truth in the form of mmdet's ``pred_instances``."""
    from pycocotools import mask as mask_utils

    from ropevit.data.synthetic_coco import make_synthetic_coco
    root = make_synthetic_coco(tmp_path_factory.mktemp('coco'), num_train=1, num_val=8, image_size=(64, 64),
                               seed=5, max_objects=4)
    ann_file = root / 'annotations' / 'instances_val2017.json'
    coco = json.loads(ann_file.read_text())
    assert [c['name'] for c in sorted(coco['categories'], key=lambda c: c['id'])] == list(COCO_CLASSES)
    images = []
    for img in coco['images']:
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]           # xywh -> xyxy
        masks = [mask_utils.decode(a['segmentation']).astype(bool) for a in anns]
        images.append(dict(
            img_id=img['id'], ori_shape=(img['height'], img['width']),
            bboxes=np.array(boxes, np.float64).reshape(-1, 4),
            labels=np.array([a['category_id'] - 1 for a in anns], np.int64),                # category 1 -> label 0
            masks=np.array(masks, bool).reshape(-1, img['height'], img['width']),
            scores=np.ones(len(anns))))
    return ann_file, images


def _coco_metric(ann_file: Path, images: list[dict]) -> dict:
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=COCO_CLASSES)
    samples = [dict(img_id=im['img_id'], ori_shape=im['ori_shape'], pred_instances=dict(
        bboxes=torch.tensor(im['bboxes'], dtype=torch.float32), scores=torch.tensor(im['scores']),
        labels=torch.tensor(im['labels']), masks=torch.tensor(im['masks']))) for im in images]
    metric.process({}, samples[:3])                    # two batches, as the evaluator hands them over
    metric.process({}, samples[3:])
    return metric.evaluate(len(samples))


def _counts(images: list[dict]) -> dict[int, int]:
    labels = np.concatenate([im['labels'] for im in images])
    return {c: int((labels == c).sum()) for c in range(len(COCO_CLASSES))}


def _ap_missing_one(n: int) -> float:
    """AP of a category with ``n`` ground truths when all but one are found with precision 1 and the last never:
    the recall points r <= (n - 1) / n score 1, the others 0 (``i / 100 <= (n - 1) / n`` in integers)."""
    return sum(1 for i in range(RECALL_POINTS) if i * n <= 100 * (n - 1)) / RECALL_POINTS


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= 5e-4 + 1e-9           # CocoMetric rounds to 3 decimals


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes, written out."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_ground_truth_as_prediction_gives_ap_1(coco_gt):
    ann_file, images = coco_gt
    assert all(n >= 3 for n in _counts(images).values()), _counts(images)   # every category is evaluated
    m = _coco_metric(ann_file, images)
    for task in ('bbox', 'segm'):
        for k in ('mAP', 'mAP_50', 'mAP_75'):
            assert m[f'coco/{task}_{k}'] == 1.0, (task, k, m)


def _pick(images: list[dict], want: int, *, alone: bool) -> tuple[int, int]:
    """(image index, instance index) of a ground truth of class ``want`` whose category has a count n with
    100 (n - 1) / n not a whole number (so no recall point lies exactly on the recall reached); ``alone``:
    the only instance of its class in its image (nothing else of the class it could match)."""
    for i, im in enumerate(images):
        idx = np.nonzero(im['labels'] == want)[0]
        if len(idx) and (not alone or len(idx) == 1):
            return i, int(idx[0])
    raise AssertionError(f'no suitable ground truth of class {want} in the generated set')


def _class_with_awkward_count(images: list[dict]) -> int:
    counts = _counts(images)
    for c, n in counts.items():
        if (100 * (n - 1)) % n:
            return c
    raise AssertionError(f'every class count divides 100 (n - 1): {counts}')


def test_one_ground_truth_not_predicted(coco_gt):
    """Drop one prediction of class c: AP_c = #{r <= (n_c - 1) / n_c} / 101, the other classes 1."""
    ann_file, images = coco_gt
    c = _class_with_awkward_count(images)
    n = _counts(images)[c]
    i, j = _pick(images, c, alone=False)
    spoiled = copy.deepcopy(images)
    keep = np.arange(len(spoiled[i]['labels'])) != j
    for key in ('bboxes', 'labels', 'masks', 'scores'):
        spoiled[i][key] = spoiled[i][key][keep]
    want = (_ap_missing_one(n) + len(COCO_CLASSES) - 1) / len(COCO_CLASSES)
    m = _coco_metric(ann_file, spoiled)
    for task in ('bbox', 'segm'):
        for k in ('mAP', 'mAP_50', 'mAP_75'):                 # a perfect box or mask: the same at every IoU
            assert _close(m[f'coco/{task}_{k}'], want), (task, k, m[f'coco/{task}_{k}'], want, n)


def test_wrong_category_with_the_top_score(coco_gt):
    """One ground truth of class a predicted as class b, with the highest score of all (the other predictions
    0.5). Class a misses it: AP_a as above. Class b ranks a false positive first, then its n_b true ones: after
    k true positives precision is k / (k + 1), so the interpolated precision is n_b / (n_b + 1) at every recall
    point: AP_b = n_b / (n_b + 1). The third class keeps 1. The instance is the only one of its class in an
    image with no ground truth of class b, so it cannot match anything in class b (boxes or masks)."""
    ann_file, images = coco_gt
    counts = _counts(images)
    a = _class_with_awkward_count(images)
    for b in (x for x in range(len(COCO_CLASSES)) if x != a):
        try:
            i, j = next((i, int(np.nonzero(im['labels'] == a)[0][0])) for i, im in enumerate(images)
                        if (im['labels'] == a).sum() == 1 and not (im['labels'] == b).any())
            break
        except StopIteration:
            continue
    else:
        raise AssertionError('no image with one instance of class a and none of another class')
    spoiled = copy.deepcopy(images)
    for im in spoiled:
        im['scores'][:] = 0.5
    spoiled[i]['labels'][j] = b
    spoiled[i]['scores'][j] = 1.0
    ap = {x: 1.0 for x in range(len(COCO_CLASSES))}
    ap[a] = _ap_missing_one(counts[a])
    ap[b] = counts[b] / (counts[b] + 1)
    want = sum(ap.values()) / len(ap)
    m = _coco_metric(ann_file, spoiled)
    for task in ('bbox', 'segm'):
        for k in ('mAP', 'mAP_50', 'mAP_75'):
            assert _close(m[f'coco/{task}_{k}'], want), (task, k, m[f'coco/{task}_{k}'], want, ap, counts)


def test_shifted_box_counts_only_below_its_iou(coco_gt):
    """One box shifted sideways by 0.23 of its width, scored lowest: IoU (w - d) / (w + d) = 0.626, so it is a
    true positive at the IoU thresholds 0.50, 0.55, 0.60 and a miss (plus a last-ranked false positive, which
    lowers no interpolated precision) at the 7 above. bbox AP_c = (3 + 7 AP_missing_one) / 10, AP50 of every
    class 1, AP75_c = AP_missing_one. Its mask is untouched: segm AP stays 1."""
    ann_file, images = coco_gt
    c = _class_with_awkward_count(images)
    n = _counts(images)[c]
    i, j = _pick(images, c, alone=True)
    spoiled = copy.deepcopy(images)
    box = spoiled[i]['bboxes'][j]
    shifted = box + np.array([1, 0, 1, 0]) * 0.23 * (box[2] - box[0])
    iou = _box_iou(box, shifted)
    assert 0.61 < iou < 0.64, iou                             # well inside (0.60, 0.65)
    spoiled[i]['bboxes'][j] = shifted
    spoiled[i]['scores'][j] = 0.1
    miss = _ap_missing_one(n)
    per_threshold = [1.0 if t <= iou else miss for t in IOU_THRESHOLDS]
    assert per_threshold.count(1.0) == 3
    others = len(COCO_CLASSES) - 1
    m = _coco_metric(ann_file, spoiled)
    assert _close(m['coco/bbox_mAP'], (sum(per_threshold) / 10 + others) / len(COCO_CLASSES)), m
    assert m['coco/bbox_mAP_50'] == 1.0, m
    assert _close(m['coco/bbox_mAP_75'], (miss + others) / len(COCO_CLASSES)), m
    for k in ('mAP', 'mAP_50', 'mAP_75'):
        assert m[f'coco/segm_{k}'] == 1.0, (k, m)


# --------------------------------------------------------------------------------------------
# ADE20k layout: mIoU
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def ade_samples(tmp_path_factory) -> list[dict]:
    """The generated validation split as mmseg's ADE20KDataset and pipeline hand it to the evaluator."""
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    from mmseg.datasets import ADE20KDataset
    from mmseg.datasets.transforms import LoadAnnotations
    from PIL import Image

    from ropevit.data.synthetic_ade import make_synthetic_ade
    root = make_synthetic_ade(tmp_path_factory.mktemp('ade'), num_train=1, num_val=3, image_size=(40, 56))
    ds = ADE20KDataset(data_root=str(root), data_prefix=dict(img_path='images/validation',
                                                             seg_map_path='annotations/validation'),
                       reduce_zero_label=True, pipeline=[dict(type=LoadAnnotations)])
    samples = []
    for k in range(len(ds)):
        item = ds[k]
        gt = np.asarray(item['gt_seg_map'])
        # ADE's convention by hand: PNG 0 ("other") -> 255 ignored, PNG 1..150 -> class 0..149
        png = np.asarray(Image.open(item['seg_map_path'])).astype(np.int64)
        assert np.array_equal(gt, np.where(png == 0, 255, png - 1)), item['seg_map_path']
        samples.append(dict(gt=gt.astype(np.int64), seg_map_path=item['seg_map_path']))
    assert any((s['gt'] == 255).any() for s in samples)     # some pixels are ignored: that rule is exercised
    return samples


def _iou_metric(pairs: list[tuple[np.ndarray, np.ndarray]], classes: tuple[str, ...]) -> dict:
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=classes)
    samples = [dict(pred_sem_seg=dict(data=torch.from_numpy(pred)[None]),
                    gt_sem_seg=dict(data=torch.from_numpy(gt)[None])) for pred, gt in pairs]
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def _ade_classes() -> tuple[str, ...]:
    from mmseg.datasets import ADE20KDataset
    return tuple(ADE20KDataset.METAINFO['classes'])


def test_ground_truth_label_maps_give_miou_100(ade_samples):
    pairs = []
    for s in ade_samples:
        pred = np.where(s['gt'] == 255, 0, s['gt'])         # anything at ignored pixels: they do not count
        pairs.append((pred, s['gt']))
    m = _iou_metric(pairs, _ade_classes())
    assert m['mIoU'] == 100.0 and m['aAcc'] == 100.0, m


def test_hand_computed_iou_on_a_tiny_map():
    """gt [[0, 0, 1], [1, 1, 255]] vs pred [[0, 1, 1], [1, 0, 2]] over 3 classes. Ignored pixel excluded:
    class 0: intersection 1, union 3 -> 1/3; class 1: intersection 2 ((0,2), (1,0)), union 4 -> 1/2;
    class 2: predicted only at the ignored pixel -> empty union, left out of the mean.
    mIoU = (1/3 + 1/2) / 2 = 41.67 %; aAcc = 3 right of 5 counted pixels = 60 %."""
    gt = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    m = _iou_metric([(pred, gt)], ('a', 'b', 'c'))
    assert m['mIoU'] == 41.67 and m['aAcc'] == 60.0, m


def test_known_confusion_on_generated_maps(ade_samples):
    """In the first image, the pixels of the most frequent class a in its top half are predicted as class b
    (m pixels). With G_x the ground-truth pixel count of x over the set: IoU_a = (G_a - m) / G_a,
    IoU_b = G_b / (G_b + m), every other present class 1."""
    gts = [s['gt'] for s in ade_samples]
    present = sorted(set(np.concatenate([g[g != 255] for g in gts]).tolist()))
    first = gts[0]
    values, counts = np.unique(first[first != 255], return_counts=True)
    a = int(values[np.argmax(counts)])
    b = next(int(v) for v in present if v != a)
    move = np.zeros_like(first, bool)
    move[: first.shape[0] // 2] = True
    move &= first == a
    m_pix = int(move.sum())
    assert m_pix > 0
    preds = [np.where(g == 255, 0, g) for g in gts]
    preds[0] = np.where(move, b, preds[0])
    g_a = sum(int((g == a).sum()) for g in gts)
    g_b = sum(int((g == b).sum()) for g in gts)
    ious = [1.0] * (len(present) - 2) + [(g_a - m_pix) / g_a, g_b / (g_b + m_pix)]
    want = round(100 * sum(ious) / len(ious), 2)
    counted = sum(int((g != 255).sum()) for g in gts)
    m = _iou_metric(list(zip(preds, gts)), _ade_classes())
    assert abs(m['mIoU'] - want) <= 0.005 + 1e-9, (m, want, a, b, m_pix)
    assert abs(m['aAcc'] - round(100 * (counted - m_pix) / counted, 2)) <= 0.005 + 1e-9, m
