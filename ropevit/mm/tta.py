"""Test-time augmentation (multi-scale + flip) the way mmseg's and mmdet's ``tools/test.py --tta`` do it.

A config opts in by listing a TTA base, which defines ``tta_model`` and ``tta_pipeline``::

    _base_ = [..., '_base_/tta_seg.py']   # SegTTAModel: softmax-average over 6 scales x 2 flips
    _base_ = [..., '_base_/tta_det.py']   # DetTTAModel: boxes merged over 3 scales x 2 flips + NMS

:func:`apply_tta` then does what ``--tta`` does in the mm-series tools: the test model becomes
``tta_model`` wrapping ``model`` (``cfg.model = dict(**tta_model, module=model)``) and the test
data set's pipeline becomes ``tta_pipeline``. Unlike mmdet's tool, which silently invents
defaults, a config without TTA settings is an error that says which base to add.

mmdet 3.3's ``DetTTAModel`` merges boxes only (it asserts that predictions carry no masks), so a
Mask R-CNN cannot be tested with TTA as it is. ``tta_det.py`` sets ``tta_boxes_only = True``:
the mask branch is then left out of the test model and only the ``bbox`` metric is computed
(the checkpoint's mask-head weights are reported as unused keys by mmengine's non-strict load).
"""
from __future__ import annotations

import copy
import warnings
from typing import Any

from mmengine.config import Config, ConfigDict

SEG_TTA_BASE = 'configs/_base_/tta_seg.py'
DET_TTA_BASE = 'configs/_base_/tta_det.py'
SUPPORTED_TTA_MODELS: tuple[str, ...] = ('SegTTAModel', 'DetTTAModel')


def _type_name(type_: Any) -> str:
    """``'mmseg.SegTTAModel'`` or a class -> ``'SegTTAModel'``."""
    name = type_ if isinstance(type_, str) else getattr(type_, '__name__', str(type_))
    return name.split('.')[-1]


def _set_pipeline(dataset_cfg: ConfigDict, pipeline: list) -> None:
    """Give ``pipeline`` to the data set(s) that own one, below wrappers such as
    ``RepeatDataset`` (``dataset=``) or ``ConcatDataset`` (``datasets=[...]``)."""
    if 'pipeline' not in dataset_cfg and isinstance(dataset_cfg.get('datasets'), (list, tuple)):
        for child in dataset_cfg['datasets']:
            _set_pipeline(child, pipeline)
    elif 'pipeline' not in dataset_cfg and isinstance(dataset_cfg.get('dataset'), dict):
        _set_pipeline(dataset_cfg['dataset'], pipeline)
    else:
        dataset_cfg['pipeline'] = copy.deepcopy(pipeline)


def _contains_test_time_aug(pipeline: Any) -> bool:
    return isinstance(pipeline, (list, tuple)) and any(
        isinstance(t, dict) and _type_name(t.get('type', '')) == 'TestTimeAug' for t in pipeline)


def _mask_branch(model_cfg: ConfigDict) -> str | None:
    """Where the model config predicts instance masks, as a dotted key, or ``None``."""
    roi_head = model_cfg.get('roi_head')
    if isinstance(roi_head, dict) and roi_head.get('mask_head') is not None:
        return 'model.roi_head.mask_head'
    if model_cfg.get('mask_head') is not None:
        return 'model.mask_head'
    return None


def _drop_mask_branch(cfg: Config) -> None:
    """Test-time model without the mask branch; evaluate boxes only (see module docstring)."""
    roi_head = cfg.model.roi_head
    roi_head.mask_head = None
    roi_head.mask_roi_extractor = None
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    for evaluator in evaluators:
        metric = evaluator.get('metric')
        if metric is None:
            continue
        metrics = [metric] if isinstance(metric, str) else list(metric)
        if 'bbox' not in metrics:
            raise ValueError(
                f'tta_boxes_only=True leaves only box predictions, but test_evaluator metric={metric!r} '
                f'has no "bbox"; add "bbox" to the metric list')
        evaluator.metric = 'bbox'
    warnings.warn('TTA with tta_boxes_only=True: mmdet DetTTAModel merges boxes only, so the mask '
                  'branch is left out at test time and only the bbox metric is reported')


def apply_tta(cfg: Config) -> Config:
    """Return a copy of ``cfg`` set up for test-time augmentation, as ``tools/test.py --tta`` runs it.

    Args:
        cfg: a full mmseg/mmdet config that defines ``tta_model`` (``SegTTAModel`` or
            ``DetTTAModel``) and ``tta_pipeline`` (a pipeline with a ``TestTimeAug`` step),
            usually by listing ``configs/_base_/tta_seg.py`` or ``tta_det.py`` in ``_base_``.

    Returns:
        A new config whose ``model`` is ``dict(**tta_model, module=<the original model>)`` and
        whose test data set uses ``tta_pipeline``. ``cfg`` itself is not modified.

    Raises:
        ValueError: the config has no ``tta_model`` / ``tta_pipeline`` (names the base to add),
            ``tta_pipeline`` has no ``TestTimeAug`` step, ``tta_model`` is of an unknown type, or a
            ``DetTTAModel`` would receive mask predictions without ``tta_boxes_only=True``.
    """
    name = getattr(cfg, 'filename', None) or 'the config'
    missing = [key for key in ('tta_model', 'tta_pipeline') if cfg.get(key) is None]
    if missing:
        raise ValueError(
            f'{name} has no test-time augmentation settings (missing {" and ".join(missing)}). '
            f'Add {SEG_TTA_BASE!r} (segmentation) or {DET_TTA_BASE!r} (detection) to its _base_ '
            f'list, or define tta_model and tta_pipeline in it, then run with --tta again')
    if not _contains_test_time_aug(cfg.tta_pipeline):
        raise ValueError(
            f'{name}: tta_pipeline must contain a TestTimeAug step (multi-scale/flip views), '
            f'got {[_type_name(t.get("type")) for t in cfg.tta_pipeline if isinstance(t, dict)]}')
    tta_type = _type_name(cfg.tta_model.get('type'))
    if tta_type not in SUPPORTED_TTA_MODELS:
        raise ValueError(f'{name}: tta_model type={tta_type!r} is not supported; '
                         f'choose one of {SUPPORTED_TTA_MODELS}')
    if 'test_dataloader' not in cfg or cfg.test_dataloader is None:
        raise ValueError(f'{name} has no test_dataloader to apply tta_pipeline to')

    cfg = copy.deepcopy(cfg)
    if tta_type == 'DetTTAModel':
        where = _mask_branch(cfg.model)
        if where is not None:
            if not cfg.get('tta_boxes_only', False) or where != 'model.roi_head.mask_head':
                raise ValueError(
                    f'{name}: mmdet DetTTAModel merges boxes only and cannot merge the masks that '
                    f'{where} predicts. Set tta_boxes_only=True (as {DET_TTA_BASE!r} does; only for '
                    f'two-stage models with an roi_head) to test the boxes with TTA, or test without --tta')
            _drop_mask_branch(cfg)

    # [model] -> [tta_model(module=model)], as mmseg/mmdet tools/test.py do
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    _set_pipeline(cfg.test_dataloader.dataset, cfg.tta_pipeline)
    return cfg
