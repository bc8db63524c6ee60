"""Generate the study's data: scenes whose labels depend on *where* things are, in the ADE20k layout.

Every scene has one **anchor** (a red plus) and several identical grey **squares**. A square's class
is its quadrant relative to the anchor: above-left, above-right, below-left or below-right. Squares
look the same wherever they are, so a model that does not know positions (no RoPE, no APE) cannot
tell the four classes apart; one that does must compare a square's position with the anchor's.
The background is ignored (ADE label 0), so the metric scores the objects only.

``images/<split>/*.jpg`` and ``annotations/<split>/*.png`` (mmseg's ``ADE20KDataset`` reads them
with ``reduce_zero_label=True``: ADE 1..5 -> classes 0..4):

* ``training`` / ``validation``: ``--size`` (64) pixel scenes;
* ``validation_<S>`` for every ``--scene-sizes S``: larger scenes at the **same object scale**
  (same square and anchor sizes in pixels, the number of squares grows with the area), which is what
  a detector sees when the test image is larger than its training crops.

Square corners snap to a 4-pixel lattice and squares keep a margin to the anchor's row and column,
so a quadrant is never ambiguous. Deterministic from ``--seed``.

    python projects/resolution_extrapolation/make_data.py --out data/extrapolation_quadrants
"""
from __future__ import annotations

import argparse
import os.path as osp
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

#: ADE labels (0 = ignored background); classes after ``reduce_zero_label``: label - 1.
ANCHOR, ABOVE_LEFT, ABOVE_RIGHT, BELOW_LEFT, BELOW_RIGHT = 1, 2, 3, 4, 5
CLASSES = ('anchor', 'above-left', 'above-right', 'below-left', 'below-right')
ANCHOR_ARM, ANCHOR_WIDTH = 6, 4          # plus: arms of 6 px each side of the centre, 4 px wide
SQUARE_SIZES = (8, 12)                   # side in pixels
MARGIN = 4                               # free pixels between a square and the anchor's row / column
SQUARES_PER_64 = 4                       # squares in a 64x64 scene (scaled by area)


def quadrant(cx: float, cy: float, ax: float, ay: float) -> int:
    """ADE label of a square centred at ``(cx, cy)`` for an anchor at ``(ax, ay)`` (y grows downwards)."""
    if cy < ay:
        return ABOVE_LEFT if cx < ax else ABOVE_RIGHT
    return BELOW_LEFT if cx < ax else BELOW_RIGHT


def make_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``[size, size, 3]`` uint8 image and its ``[size, size]`` uint8 ADE label map."""
    label = np.zeros((size, size), np.uint8)
    image = rng.normal(rng.uniform(60, 110), 12, (size, size, 3))                 # textured background
    reach = ANCHOR_ARM + ANCHOR_WIDTH // 2
    ax, ay = (int(v) for v in rng.integers(reach, size - reach, 2))              # anchor centre
    half = ANCHOR_WIDTH // 2
    plus = np.zeros((size, size), bool)
    plus[ay - ANCHOR_ARM - half:ay + ANCHOR_ARM + half, ax - half:ax + half] = True
    plus[ay - half:ay + half, ax - ANCHOR_ARM - half:ax + ANCHOR_ARM + half] = True
    label[plus] = ANCHOR
    image[plus] = (200, 40, 40)
    grey = rng.uniform(150, 210)                                                  # the same for all squares
    wanted = max(1, round(SQUARES_PER_64 * size * size / 64 ** 2))
    taken = plus.copy()
    placed = tries = 0
    while placed < wanted and tries < 200 * wanted:
        tries += 1
        s = int(rng.integers(SQUARE_SIZES[0], SQUARE_SIZES[1] + 1))
        x, y = (int(v) // 4 * 4 for v in rng.integers(0, size - s + 1, 2))
        if x + s > size or y + s > size:
            continue
        # keep clear of the anchor's row and column bands, and of other objects (1 px gap)
        if not (x + s + MARGIN <= ax - half or x >= ax + half + MARGIN):
            continue
        if not (y + s + MARGIN <= ay - half or y >= ay + half + MARGIN):
            continue
        if taken[max(0, y - 1):y + s + 1, max(0, x - 1):x + s + 1].any():
            continue
        taken[y:y + s, x:x + s] = True
        label[y:y + s, x:x + s] = quadrant(x + s / 2, y + s / 2, ax, ay)
        image[y:y + s, x:x + s] = grey
        placed += 1
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    return image, label


def _write_split(root: str, split: str, count: int, size: int, rng: np.random.Generator) -> None:
    img_dir, ann_dir = Path(root, 'images', split), Path(root, 'annotations', split)
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, label = make_scene(rng, size)
        Image.fromarray(image).save(img_dir / f'{split}_{i:05d}.jpg', quality=95)
        Image.fromarray(label).save(ann_dir / f'{split}_{i:05d}.png')


def make_dataset(root: str, *, size: int = 64, num_train: int = 1024, num_val: int = 128,
                 scene_sizes: Sequence[int] = (96, 128), seed: int = 0) -> str:
    """Write the training, validation and ``validation_<S>`` splits; returns the absolute root."""
    reach = 2 * (ANCHOR_ARM + ANCHOR_WIDTH // 2)
    for s in (size, *scene_sizes):
        if s < reach + 2 * SQUARE_SIZES[1]:
            raise ValueError(f'scene size {s} is too small for an anchor and squares (>= {reach + 2 * SQUARE_SIZES[1]})')
    rng = np.random.default_rng(seed)
    _write_split(root, 'training', num_train, size, rng)
    _write_split(root, 'validation', num_val, size, rng)
    for s in scene_sizes:
        _write_split(root, f'validation_{s}', num_val, s, rng)
    return osp.abspath(root)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/extrapolation_quadrants')
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--num-train', type=int, default=1024)
    parser.add_argument('--num-val', type=int, default=128)
    parser.add_argument('--scene-sizes', type=int, nargs='*', default=[96, 128])
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    print(make_dataset(args.out, size=args.size, num_train=args.num_train, num_val=args.num_val,
                       scene_sizes=args.scene_sizes, seed=args.seed))
