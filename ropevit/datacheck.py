"""Fail early, with a useful message, when a config's data set is not where it points.

Without this, mmdet/mmseg fail deep inside dataset construction (a bare ``FileNotFoundError`` of a
json, or, for ADE20k, an empty data set and a sampler error). :func:`check_datasets` looks at every
dataloader of a config before the runner is built and names the missing path, the layout that was
expected, and how to make the demo data instead.

What only shows once a data set is read (an annotation file that lists no images, an image folder
with no images) is explained by :func:`explain_empty_datasets`, which the tools call when building
the data sets failed: reading a 450 MB COCO json a second time is only worth it then.

:func:`check_annotations` finds data that contradicts its annotation file (what is checked fully and
what is sampled: the comment above it). Plain Python (json, re; PIL and numpy when images are looked
at): the tools run these checks before they import torch, mmdet or mmseg. ``ropevit.mm.data_check``
re-exports this module.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
from typing import Any, Iterator, Optional

__all__ = ['DatasetNotFoundError', 'DataCheckError', 'check_datasets', 'explain_empty_datasets',
           'check_annotations', 'check_coco_annotations', 'check_seg_labels', 'diagnose_image', 'LAYOUTS']

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


class DataCheckError(ValueError):
    """A data set contradicts its annotation file; the message names the file and the fix."""


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
    for loader_key in which:
        evaluator_key = loader_key.replace('_dataloader', '_evaluator')
        evaluators = cfg.get(evaluator_key)
        for i, ev in enumerate(evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]):
            ann = ev.get('ann_file') if isinstance(ev, dict) else None
            if ann and '://' not in str(ann) and not osp.isfile(ann):
                name = evaluator_key + (f'[{i}]' if isinstance(evaluators, (list, tuple)) else '')
                raise DatasetNotFoundError(
                    f'{name}.ann_file {ann!r} does not exist (cwd: {osp.abspath(".")}); point it at the '
                    f'annotation file of {loader_key}.dataset (the metric reads the ground truth from it)')


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


# ------------------------------------------------------------------------------ annotations vs data
# What :func:`check_annotations` looks at, before training or testing:
#
# COCO json, every entry (cheap: only the "images" and "categories" arrays are parsed as json; the
# annotation array is scanned with regular expressions, and only annotations holding an RLE mask are
# parsed; 118k images / 860k annotations take about 2 s instead of json.load's 20 s):
#   duplicate image ids, images without a positive width/height, an empty "categories" list,
#   annotation category ids that are not in "categories", RLE masks whose "size" is not the
#   [height, width] of their image.
# Sampled (``sample`` images, evenly spread over the file, default 100): the size of each image file
# as the config's LoadImageFromFile decodes it (header only, no pixel decode) against the json's
# width/height. mmcv's decoders apply the EXIF orientation unless color_type says
# "..._ignore_orientation" (or "unchanged"); the check follows the pipeline's choice, and when the
# json matches the other convention it says which color_type reads the images the way the json was made.
# ADE20k-style folders, sampled: label maps that are not single-channel, of another size than their
# image, or with values above num_classes other than the ignore index 255.
_EXIF_ORIENTATION = 0x0112
_CAT_ID = re.compile(rb'"category_id"\s*:\s*(-?\d+)')
_COUNTS = re.compile(rb'"counts"\s*:')


def _few(items: list, n: int = 5) -> str:
    items = list(items)
    return ', '.join(map(str, items[:n])) + (f' ... ({len(items)} in all)' if len(items) > n else '')


def _top_level_array(text: str, key: str) -> Optional[list]:
    """The JSON array under a top-level ``key`` of a COCO file, parsed alone (None if not found)."""
    decoder = json.JSONDecoder()
    pattern = re.compile(r'"%s"\s*:\s*\[' % re.escape(key))
    for m in pattern.finditer(text):
        try:
            value, _ = decoder.raw_decode(text, m.end() - 1)
        except ValueError:
            continue
        if isinstance(value, list) and all(isinstance(v, dict) for v in value[:10]):
            return value
    return None


def _rle_annotations(text: str, raw: bytes) -> Iterator[dict]:
    """The annotations that hold an RLE (``counts``) mask, each parsed alone."""
    decoder = json.JSONDecoder()
    for m in _COUNTS.finditer(raw):
        # raw is the UTF-8 of text; COCO files are ASCII, where byte and character offsets agree.
        pos = m.start()
        start = text.rfind('{', 0, pos)          # the RLE dict itself
        for _ in range(3):                       # the annotation object opens a little before it
            start = text.rfind('{', 0, start)
            if start < 0:
                break
            try:
                obj, end = decoder.raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get('segmentation'), dict) and end > pos:
                yield obj
                break


def _pipeline_of(ds: dict) -> list:
    pipeline = ds.get('pipeline') or []
    return [t for t in pipeline if isinstance(t, dict)]


def _honours_exif(ds: dict) -> tuple[bool, str]:
    """Whether the data set's LoadImageFromFile applies EXIF orientation, and its color_type."""
    for t in _pipeline_of(ds):
        if 'LoadImageFromFile' in str(t.get('type', '')):
            color_type = t.get('color_type', 'color')
            return ('ignore_orientation' not in color_type and color_type != 'unchanged'), color_type
    return True, 'color'


def _image_size(path: str) -> tuple[tuple[int, int], int]:
    """``((width, height) as stored, EXIF orientation)`` from the header; raises OSError."""
    from PIL import Image
    with Image.open(path) as im:
        try:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
        except Exception:  # noqa: BLE001  (a broken EXIF block: mmcv ignores it too)
            orientation = 1
        return im.size, orientation


def diagnose_image(path: str) -> Optional[str]:
    """Why ``path`` cannot be decoded as an image, or None if it decodes."""
    from PIL import Image
    if not osp.exists(path):
        return 'no such file'
    if osp.isdir(path):
        return 'a folder, not an image file'
    if osp.getsize(path) == 0:
        return 'empty file (0 bytes)'
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # noqa: BLE001  (PIL raises several types; the text is the reason)
        text = str(e).replace(repr(path), '').replace(path, '').strip(' :')  # the path is named already
        return f'{type(e).__name__}: {text}'.splitlines()[0] if text else type(e).__name__
    return None


def _sample(n_total: int, n: int) -> list[int]:
    if n_total <= n:
        return list(range(n_total))
    return sorted({round(i * (n_total - 1) / (n - 1)) for i in range(n)})


def check_coco_annotations(ann_path: str, img_dir: str, *, where: str = '', ds: Optional[dict] = None,
                           sample: int = 100) -> None:
    """Raise :class:`DataCheckError` where the COCO file ``ann_path`` contradicts itself or its images
    in ``img_dir`` (what is checked fully and what is sampled: see the comment above)."""
    ds = ds or {}
    head = f'{where}: ' if where else ''
    with open(ann_path, 'rb') as f:
        raw = f.read()
    text = raw.decode('utf-8')
    images = _top_level_array(text, 'images')
    categories = _top_level_array(text, 'categories')
    if images is None:
        return  # not COCO-shaped; explain_empty_datasets / the loader say so
    if categories is not None and not categories:
        raise DataCheckError(f'{head}annotation file {ann_path!r} has an empty "categories" list, so no '
                             f'annotation can be given a class; list the classes there (id, name).')
    ids = [img.get('id') for img in images]
    seen: set = set()
    dups = sorted({i for i in ids if i in seen or seen.add(i)}, key=str)
    if dups:
        raise DataCheckError(
            f'{head}annotation file {ann_path!r} lists image ids more than once ({_few(dups)}); pycocotools '
            f'keeps only the last image of each id and gives it the annotations of all. Give every image '
            f'its own id.')
    sizes: dict = {}
    for img in images:
        w, h = img.get('width'), img.get('height')
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            raise DataCheckError(f'{head}annotation file {ann_path!r}: image id {img.get("id")!r} '
                                 f'({img.get("file_name")!r}) has width={w!r}, height={h!r}; both must be '
                                 f'positive integers (the decoded image size).')
        sizes[img.get('id')] = (h, w)
    if categories is not None:
        known = {c.get('id') for c in categories}
        used = {int(m) for m in _CAT_ID.findall(raw)}
        unknown = sorted(used - known)
        if unknown:
            raise DataCheckError(
                f'{head}annotation file {ann_path!r}: annotations use category ids {_few(unknown)} that '
                f'are not in its "categories" (ids {_few(sorted(known, key=str), 10)}); mmdet drops such '
                f'annotations in silence. Add the categories or fix the ids.')
    honour, color_type = _honours_exif(ds)
    for i in _sample(len(images), sample):
        img = images[i]
        path = osp.join(img_dir, str(img.get('file_name', '')))
        try:
            (w, h), orientation = _image_size(path)
        except OSError:
            continue  # a missing or undecodable file is named when the loader reaches it
        rotated = orientation in (5, 6, 7, 8)
        decoded = (h, w) if not (honour and rotated) else (w, h)
        other = (w, h) if not (honour and rotated) else (h, w)
        want = (img['height'], img['width'])
        if decoded == want:
            continue
        if rotated and other == want:
            fix = ("set color_type='color_ignore_orientation' in LoadImageFromFile (train and test "
                   "pipelines): the json was made from the stored pixels, ignoring the EXIF orientation"
                   if honour else
                   "set color_type='color' in LoadImageFromFile: the json was made with the EXIF "
                   "orientation applied")
            raise DataCheckError(
                f'{head}{path!r} carries EXIF orientation {orientation}; LoadImageFromFile(color_type='
                f'{color_type!r}) decodes it as {decoded[1]}x{decoded[0]} but {ann_path!r} says '
                f'{want[1]}x{want[0]} (width x height); {fix}.')
        raise DataCheckError(
            f'{head}{path!r} decodes as {decoded[1]}x{decoded[0]} but {ann_path!r} says {want[1]}x{want[0]} '
            f'(width x height, image id {img.get("id")!r}); fix the json\'s width/height or the image '
            f'(boxes and masks would not line up).')
    for ann in _rle_annotations(text, raw):
        rle_size = ann['segmentation'].get('size')
        want = sizes.get(ann.get('image_id'))
        if want is not None and rle_size is not None and tuple(rle_size) != want:
            raise DataCheckError(
                f'{head}annotation file {ann_path!r}: annotation id {ann.get("id")!r} has an RLE mask of size '
                f'{list(rle_size)} (height, width) but the json gives its image {ann.get("image_id")!r} the size '
                f'{list(want)}; the two must agree: encode the mask at the image size (or fix the image\'s '
                f'width/height).')


def _num_classes(cfg: Any) -> Optional[int]:
    model = cfg.get('model') or {}
    head = model.get('decode_head')
    if isinstance(head, (list, tuple)):
        head = head[-1] if head else None
    if isinstance(head, dict) and isinstance(head.get('num_classes'), int):
        return head['num_classes']
    return None


def check_seg_labels(img_dir: str, seg_dir: str, *, where: str = '', img_suffix: str = '.jpg',
                     seg_suffix: str = '.png', num_classes: Optional[int] = None,
                     reduce_zero_label: bool = False, ignore_index: int = 255, sample: int = 100) -> None:
    """Raise :class:`DataCheckError` for a sampled label map that is RGB, of another size than its
    image, or holds values above the classes (other than ``ignore_index``)."""
    import numpy as np
    from PIL import Image
    head = f'{where}: ' if where else ''
    names = sorted(_image_files(img_dir, img_suffix))
    top = None if num_classes is None else (num_classes if reduce_zero_label else num_classes - 1)
    for i in _sample(len(names), sample):
        stem = names[i][:-len(img_suffix)] if img_suffix else names[i]
        label_path = osp.join(seg_dir, stem + seg_suffix)
        if not osp.isfile(label_path):
            continue  # mmseg names a missing label map itself
        with Image.open(label_path) as lab:
            mode, size = lab.mode, lab.size
            if mode not in ('L', 'P', 'I', 'I;16'):
                raise DataCheckError(
                    f'{head}label map {label_path!r} is {mode} ({len(lab.getbands())} channels); label maps '
                    f'are single-channel PNGs of class indices (mode L or P). Convert colour-coded maps to '
                    f'indices first.')
            values = np.asarray(lab) if top is not None else None
        try:
            (w, h), _ = _image_size(osp.join(img_dir, names[i]))
        except OSError:
            continue
        if (w, h) != size:
            raise DataCheckError(
                f'{head}label map {label_path!r} is {size[0]}x{size[1]} but its image '
                f'{osp.join(img_dir, names[i])!r} is {w}x{h} (width x height); they must be the same size.')
        if values is not None:
            bad = np.unique(values[(values > top) & (values != ignore_index)])
            if bad.size:
                allowed = (f'0..{top} (0 = "other", ignored with reduce_zero_label=True)' if reduce_zero_label
                           else f'0..{top}')
                raise DataCheckError(
                    f'{head}label map {label_path!r} holds values {_few(bad.tolist())} above the '
                    f'{num_classes} classes; allowed: {allowed} and {ignore_index} (ignore). Check '
                    f'num_classes and reduce_zero_label, or the label maps.')


def _reduce_zero_label(ds: dict) -> bool:
    """mmseg's rule: the pipeline's LoadAnnotations(reduce_zero_label=...) if set, else the data
    set's (ADE20KDataset: True, others False)."""
    for t in _pipeline_of(ds):
        if 'LoadAnnotations' in str(t.get('type', '')) and t.get('reduce_zero_label') is not None:
            return bool(t['reduce_zero_label'])
    return bool(ds.get('reduce_zero_label', 'ADE' in str(ds.get('type', ''))))


def check_annotations(cfg: Any, *, which: tuple[str, ...] = ('train_dataloader', 'val_dataloader',
                                                               'test_dataloader'),
                      sample: int = 100) -> None:
    """Raise :class:`DataCheckError` where a data set of ``cfg`` contradicts its annotation file
    (run after :func:`check_datasets`; missing paths are skipped here)."""
    seen: set = set()
    for loader_key, ds in _datasets(cfg):
        if loader_key not in which:
            continue
        root = ds.get('data_root') or ''
        where = f'{loader_key}.dataset ({ds.get("type", "?")})'
        prefix = ds.get('data_prefix') or {}

        def _path(p: str) -> str:
            return p if osp.isabs(p) else osp.join(root, p)

        if _layout(ds) == 'coco' and ds.get('ann_file'):
            ann_path = _path(ds['ann_file'])
            img_dir = _path(prefix.get('img', '') or '')
            if (ann_path, img_dir) in seen or not osp.isfile(ann_path):
                continue
            seen.add((ann_path, img_dir))
            check_coco_annotations(ann_path, img_dir, where=where, ds=ds, sample=sample)
        elif _layout(ds) == 'ade' and prefix.get('img_path') and prefix.get('seg_map_path'):
            img_dir, seg_dir = _path(prefix['img_path']), _path(prefix['seg_map_path'])
            if (img_dir, seg_dir) in seen or not (osp.isdir(img_dir) and osp.isdir(seg_dir)):
                continue
            seen.add((img_dir, seg_dir))
            check_seg_labels(img_dir, seg_dir, where=where, img_suffix=ds.get('img_suffix', '.jpg'),
                             seg_suffix=ds.get('seg_map_suffix', '.png'), num_classes=_num_classes(cfg),
                             reduce_zero_label=_reduce_zero_label(ds),
                             ignore_index=int(ds.get('ignore_index', 255)), sample=sample)
