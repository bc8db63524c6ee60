"""Generate the study's data set in the ADE20k folder layout (mmseg ``ADE20KDataset`` reads it unchanged).

``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``; label 0 is
"ignore" as in ADE20k (``reduce_zero_label=True`` maps 1..150 to 0..149). Every scene has a
background class and a few rectangles and ellipses of 8 object classes; each class has its own
colour, with per-pixel noise, so the task is learnable in minutes on a CPU.

    python projects/resolution_extrapolation/make_data.py --out data/extrapolation_ade --size 64
"""
from __future__ import annotations

import argparse
import os.path as osp
from pathlib import Path

import numpy as np
from PIL import Image

NUM_OBJECT_CLASSES = 8          # ADE labels 2..9; 1 is the background


def make_scene(rng: np.random.Generator, size: int, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ``[size, size, 3]`` uint8 image and its ``[size, size]`` uint8 ADE label map."""
    label = np.ones((size, size), np.uint8)                             # background = ADE label 1
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(2, 6)):
        cls = int(rng.integers(2, 2 + NUM_OBJECT_CLASSES))
        h, w = rng.integers(size // 8, size // 2, 2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        if rng.random() < 0.5:
            label[y:y + h, x:x + w] = cls
        else:
            cy, cx = y + h / 2, x + w / 2
            label[((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1] = cls
    noise = rng.normal(0, 25, (size, size, 3))
    image = np.clip(palette[label] + noise, 0, 255).astype(np.uint8)
    return image, label


def make_dataset(root: str, *, size: int = 64, num_train: int = 512, num_val: int = 64, seed: int = 0) -> str:
    if size < 16:
        raise ValueError(f'size={size} must be >= 16')
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, (256, 3)).astype(np.float64)      # colour per ADE label
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir, ann_dir = Path(root, 'images', split), Path(root, 'annotations', split)
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = make_scene(rng, size, palette)
            Image.fromarray(image).save(img_dir / f'{split}_{i:05d}.jpg', quality=95)
            Image.fromarray(label).save(ann_dir / f'{split}_{i:05d}.png')
    return osp.abspath(root)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/extrapolation_ade')
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--num-train', type=int, default=512)
    parser.add_argument('--num-val', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    print(make_dataset(args.out, size=args.size, num_train=args.num_train, num_val=args.num_val, seed=args.seed))
