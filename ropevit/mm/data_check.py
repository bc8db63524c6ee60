"""Fail early, with a useful message, when a config's data set is not where it points.

Without this, mmdet/mmseg fail deep inside dataset construction (a bare ``FileNotFoundError`` of a
json, or, for ADE20k, an empty data set and a sampler error). :func:`check_datasets` looks at every
dataloader of a config before the runner is built and names the missing path, the layout that was
expected, and how to make the demo data instead.

What only shows once a data set is read (an annotation file that lists no images, an image folder
with no images) is explained by :func:`explain_empty_datasets`, which the tools call when building
the data sets failed: reading a 450 MB COCO json a second time is only worth it then.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Iterator, Optional

LAYOUTS = {
    'coco': ('COCO 2017 layout:\n'
             '  {root}/annotations/instances_train2017.json\n'
             '  {root}/annotations/instances_val2017.json\n'
             '  {root}/train2017/*.jpg  {root}/val2017/*.jpg\n'
             'Download COCO 2017 from https://cocodataset.org and unpack it there (or symlink it), '
             'or point the config at another root with --cfg-options. To try ropevit without COCO, '
             'run the demo on generated COCO-format data: `make demo` (or '
             '`python -m ropevit.data.synthetic_coco data/synthetic_coco`).'),
    'ade': ('ADE20k layout (ADEChallengeData2016):\n'
            '  {root}/images/training/*.jpg        {root}/images/validation/*.jpg\n'
            '  {root}/annotations/training/*.png   {root}/annotations/validation/*.png\n'
            'Download ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu and unzip it into '
            'data/ade/, or point the config at another root with --cfg-options. To try ropevit without '
            'ADE20k, run the segmentation demo on generated ADE-format data: `make demo-seg`.'),
}


class DatasetNotFoundError(FileNotFoundError):
    """A config's data set is missing; the message says what and where."""


def _datasets(cfg: Any) -> Iterator[tuple[str, dict]]:
    for loader_key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(loader_key)
        if not loader or not isinstance(loader, dict) or 'dataset' not in loader:
            continue
        stack = [loader['dataset']]
        while stack:
            ds = stack.pop()
            if not isinstance(ds, dict):
                continue
            if 'datasets' in ds:          # ConcatDataset
                stack.extend(ds['datasets'])
            elif 'dataset' in ds:         # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset
                stack.append(ds['dataset'])
            else:
                yield loader_key, ds


def _layout(ds: dict) -> str:
    kind = str(ds.get('type', ''))
    return 'ade' if ('ADE' in kind or 'Seg' in kind) else 'coco'


def check_datasets(cfg: Any, *, which: tuple[str, ...] = ('train_dataloader', 'val_dataloader',
                                                            'test_dataloader')) -> None:
    """Raise :class:`DatasetNotFoundError` for the first missing data root, annotation file or
    image folder among the config's dataloaders listed in ``which``."""
    for loader_key, ds in _datasets(cfg):
        if loader_key not in which:
            continue
        root = ds.get('data_root') or ''
        layout = LAYOUTS[_layout(ds)].format(root=root.rstrip('/') or '<data_root>')
        where = f'{loader_key}.dataset ({ds.get("type", "?")})'
        if root and not osp.isdir(root):
            raise DatasetNotFoundError(
                f'{where}: data_root {root!r} does not exist (cwd: {osp.abspath(".")}).\nExpected the '
                f'{layout}')
        ann = ds.get('ann_file')
        if ann:
            ann_path = ann if osp.isabs(ann) else osp.join(root, ann)
            if not osp.isfile(ann_path):
                raise DatasetNotFoundError(f'{where}: annotation file {ann_path!r} does not exist.\n'
                                           f'Expected the {layout}')
        for key, folder in (ds.get('data_prefix') or {}).items():
            if key not in ('img', 'img_path', 'seg_map_path') or not folder:
                continue
            path = folder if osp.isabs(folder) else osp.join(root, folder)
            if not osp.isdir(path):
                raise DatasetNotFoundError(f'{where}: {key} folder {path!r} does not exist.\n'
                                           f'Expected the {layout}')


def _image_files(folder: str, suffix: str) -> Iterator[str]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and entry.name.endswith(suffix):
                yield entry.name


def _explain_coco(where: str, ann_path: str, ds: dict) -> Optional[str]:
    try:
        with open(ann_path) as f:
            ann = json.load(f)
    except (OSError, ValueError) as e:
        return f'{where}: annotation file {ann_path!r} cannot be read as COCO json ({e}).'
    if not isinstance(ann, dict) or not isinstance(ann.get('images'), list):
        return f'{where}: annotation file {ann_path!r} has no "images" list; it is not a COCO annotation file.'
    images, annotations = ann['images'], ann.get('annotations') or []
    if not images:
        return (f'{where}: annotation file {ann_path!r} lists no images (its "images" list is empty), so the '
                f'data set is empty. Point ann_file at a file that lists the images of its image folder.')
    filter_cfg = ds.get('filter_cfg') or {}
    if not annotations and filter_cfg.get('filter_empty_gt', False):
        return (f'{where}: annotation file {ann_path!r} lists {len(images)} images but no annotations, and '
                f'filter_cfg.filter_empty_gt=True drops images without annotations, so the data set is empty.')
    return None


def explain_empty_datasets(cfg: Any, *, which: tuple[str, ...] = ('train_dataloader', 'val_dataloader',
                                                                     'test_dataloader')) -> Optional[str]:
    """Why a data set of the config holds no samples, or None when none of them is empty for a
    reason found here: a COCO annotation file with no images (or no annotations while empty images
    are filtered), an ADE-style image folder without images."""
    for loader_key, ds in _datasets(cfg):
        if loader_key not in which:
            continue
        root = ds.get('data_root') or ''
        where = f'{loader_key}.dataset ({ds.get("type", "?")})'
        ann = ds.get('ann_file')
        if _layout(ds) == 'coco' and ann:
            ann_path = ann if osp.isabs(ann) else osp.join(root, ann)
            if osp.isfile(ann_path):
                problem = _explain_coco(where, ann_path, ds)
                if problem:
                    return problem
        if _layout(ds) == 'ade':
            folder = (ds.get('data_prefix') or {}).get('img_path')
            if folder:
                path = folder if osp.isabs(folder) else osp.join(root, folder)
                suffix = ds.get('img_suffix', '.jpg')
                if osp.isdir(path) and next(_image_files(path, suffix), None) is None:
                    return (f'{where}: image folder {path!r} holds no *{suffix} images, so the data set is '
                            f'empty.\nExpected the {LAYOUTS["ade"].format(root=root.rstrip("/") or "<data_root>")}')
    return None
