"""A small synthetic instance-segmentation set in real COCO format, deterministic from a seed.

Layout (the same as COCO 2017, so configs only change ``data_root``)::

    ROOT/annotations/instances_{train,val}2017.json
    ROOT/{train,val}2017/000000000001.jpg ...

Each image has a textured background (smooth noise, stripes) and 1..max_objects shapes of three classes
(circle, square, triangle) with varied size and colour; later shapes occlude earlier ones and
each annotation's mask (RLE) and box cover only the visible part. A marker file records the
parameters of the set, so a folder is reused only for the same request (:mod:`ropevit.data.generated_root`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .generated_root import generator_main, generator_params, prepare_root, write_marker

CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle')
# Base hue of each class in RGB; every instance jitters it, so colour helps but does not decide.
_BASE_COLOURS = np.array([[220, 60, 60], [60, 200, 80], [70, 90, 230]], dtype=np.float32)
_MIN_VISIBLE = 30  # pixels; fainter remains of an occluded shape are not annotated


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth low-frequency noise plus faint stripes, uint8 ``[H, W, 3]``."""
    coarse = rng.uniform(40, 150, size=(4, 4, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32)
    period = rng.uniform(6, 20)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 12 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    img += stripes[..., None] + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int, min_size: int, max_size: int
                ) -> np.ndarray:
    size = int(rng.integers(min_size, max_size + 1))
    x0 = int(rng.integers(0, max(1, w - size)))
    y0 = int(rng.integers(0, max(1, h - size)))
    canvas = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == 0:
        draw.ellipse([x0, y0, x0 + size, y0 + size], fill=1)
    elif cls == 1:
        draw.rectangle([x0, y0, x0 + size, y0 + size], fill=1)
    else:
        draw.polygon([(x0 + size / 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=1)
    return np.asarray(canvas, dtype=bool)


def _encode(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def _make_split(root: Path, split: str, num_images: int, image_size: Sequence[int], seed: int,
                max_objects: int) -> Path:
    h, w = image_size
    rng = np.random.default_rng(seed)
    img_dir = root / f'{split}2017'
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    min_size, max_size = max(8, min(h, w) // 8), max(12, min(h, w) // 2)
    for image_id in range(1, num_images + 1):
        img = _background(rng, h, w)
        owner = np.zeros((h, w), dtype=np.int32)  # index+1 of the shape visible at each pixel
        shapes = []
        for k in range(int(rng.integers(1, max_objects + 1))):
            cls = int(rng.integers(len(CLASSES)))
            mask = _shape_mask(rng, cls, h, w, min_size, max_size)
            colour = np.clip(_BASE_COLOURS[cls] + rng.normal(0, 25, 3), 0, 255)
            shade = 1.0 + 0.15 * rng.standard_normal((h, w, 1))  # some texture on the object
            img[mask] = np.clip(colour * shade[mask], 0, 255).astype(np.uint8)
            owner[mask] = k + 1
            shapes.append(cls)
        file_name = f'{image_id:012d}.jpg'
        Image.fromarray(img).save(img_dir / file_name, quality=92)
        images.append(dict(id=image_id, file_name=file_name, height=h, width=w))
        for k, cls in enumerate(shapes):
            visible = owner == k + 1
            area = int(visible.sum())
            if area < _MIN_VISIBLE:
                continue
            ys, xs = np.nonzero(visible)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=cls + 1, iscrowd=0, area=area,
                bbox=[float(x1), float(y1), float(x2 - x1), float(y2 - y1)], segmentation=_encode(visible)))
    ann_dir = root / 'annotations'
    ann_dir.mkdir(parents=True, exist_ok=True)
    ann_file = ann_dir / f'instances_{split}2017.json'
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(CLASSES)],
                info=dict(description=f'ropevit synthetic shapes, seed {seed}'), licenses=[])
    tmp = ann_file.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, ann_file)  # the json appears only when the split is complete
    return ann_file


GENERATOR = 'synthetic_coco'


def owned_files(params: Mapping[str, Any]) -> list[str]:
    """Paths (relative to the root) this generator writes for ``params``: images, json files, their temporaries."""
    files = []
    for split, count in (('train', params['num_train']), ('val', params['num_val'])):
        files += [f'{split}2017/{image_id:012d}.jpg' for image_id in range(1, int(count) + 1)]
        files += [f'annotations/instances_{split}2017.json', f'annotations/instances_{split}2017.json.tmp']
    return files


def make_synthetic_coco(root: str | os.PathLike, *, num_train: int = 240, num_val: int = 48,
                        image_size: Sequence[int] = (128, 128), seed: int = 0, max_objects: int = 4,
                        overwrite: bool = False) -> Path:
    """Write the set under ``root``; returns ``root`` as a Path. Reuse, regeneration and refusal of an
    existing folder follow its marker (:mod:`ropevit.data.generated_root`).

    Args:
        image_size: ``(H, W)`` of every image, both >= 16.
        seed: the training split uses ``seed``, the validation split ``seed + 1``.
        max_objects: each image gets 1..``max_objects`` shapes (>= 1).
    """
    params = generator_params(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed,
                              max_objects=max_objects)
    h, w = params['image_size']
    root = Path(root)
    if prepare_root(root, generator=GENERATOR, params=params, owned=owned_files, overwrite=overwrite):
        return root
    _make_split(root, 'train', num_train, (h, w), seed, max_objects)
    _make_split(root, 'val', num_val, (h, w), seed + 1, max_objects)
    write_marker(root, generator=GENERATOR, params=params, complete=True)
    return root


def main() -> None:
    generator_main(make_synthetic_coco, description='Write a synthetic COCO-format instance segmentation set.',
                   default_root='data/synthetic_coco', num_train=240, num_val=48, size=(128, 128), what='synthetic COCO set')


if __name__ == '__main__':
    main()
