"""Fail early, with a useful message, when a config's data set is not where it points.

Without this, mmdet/mmseg fail deep inside dataset construction (a bare ``FileNotFoundError`` of a
json, or, for ADE20k, an empty data set and a sampler error). :func:`check_datasets` looks at every
dataloader of a config before the runner is built and names the missing path, the layout that was
expected, and how to make the demo data instead.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Iterator

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
