"""A small synthetic semantic-segmentation set in the real ADE20k folder layout, deterministic from a seed.

Layout (that of ``ADEChallengeData2016``, so mmseg's ``ADE20KDataset`` reads it unchanged)::

    ROOT/images/training/ADE_train_00000001.jpg ...     ROOT/images/validation/ADE_val_00000001.jpg ...
    ROOT/annotations/training/ADE_train_00000001.png    ROOT/annotations/validation/ADE_val_00000001.png

Label maps are single-channel uint8 PNGs with ADE20k's convention: 0 = "other" (ignored: with
``reduce_zero_label=True`` it becomes 255), 1..150 = classes. A scene is a textured ground class
(label 1 or 2, split by a horizon) with 1-5 shapes of :data:`CLASSES` (labels 3..8) painted over
it; each class has a base colour that every instance jitters, plus shading noise. A thin band of
label 0 outlines some shapes, like the unlabelled boundaries of real ADE20k maps.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .generated_root import MARKER_NAME, generator_main, generator_params, prepare_root, write_marker

#: Names of the ADE labels this generator uses (ADE label = index + 1); the rest of ADE's 150 never occur.
CLASSES: tuple[str, ...] = ('wall', 'floor', 'disc', 'box', 'triangle', 'bar', 'ring', 'cross')
_BASE_COLOURS = np.array([[150, 150, 150], [120, 90, 60], [220, 60, 60], [60, 200, 80], [70, 90, 230],
                          [230, 200, 50], [200, 80, 220], [50, 210, 220]], dtype=np.float32)


def _shape(draw: ImageDraw.ImageDraw, kind: int, x0: float, y0: float, s: float, fill: int, width: int = 0) -> None:
    """Draw shape ``kind`` (0 disc .. 5 cross) in the box ``[x0, x0 + s] x [y0, y0 + s]``."""
    box = [x0, y0, x0 + s, y0 + s]
    if kind == 0:
        draw.ellipse(box, fill=None if width else fill, outline=fill, width=width)
    elif kind == 1:
        draw.rectangle(box, fill=None if width else fill, outline=fill, width=width)
    elif kind == 2:
        pts = [(x0 + s / 2, y0), (x0, y0 + s), (x0 + s, y0 + s)]
        draw.polygon(pts, fill=None if width else fill, outline=fill, width=width)
    elif kind == 3:                                              # a horizontal bar
        draw.rectangle([x0, y0 + s * 0.35, x0 + s, y0 + s * 0.65], fill=fill, outline=fill, width=width)
    elif kind == 4:                                              # a ring
        draw.ellipse(box, outline=fill, width=max(2, int(s / 5)) + width)
    else:                                                        # a cross
        draw.rectangle([x0 + s * 0.38, y0, x0 + s * 0.62, y0 + s], fill=fill, outline=fill, width=width)
        draw.rectangle([x0, y0 + s * 0.38, x0 + s, y0 + s * 0.62], fill=fill, outline=fill, width=width)


def make_scene(rng: np.random.Generator, height: int, width: int, *, max_objects: int = 5
               ) -> tuple[np.ndarray, np.ndarray]:
    """One ``[H, W, 3]`` uint8 RGB image and its ``[H, W]`` uint8 ADE label map (0 = other)."""
    label = np.ones((height, width), np.uint8)                                    # wall
    horizon = int(rng.integers(height // 3, 2 * height // 3 + 1))
    label[horizon:] = 2                                                           # floor
    canvas = Image.fromarray(label)
    draw = ImageDraw.Draw(canvas)
    lo, hi = max(6, min(height, width) // 6), max(10, min(height, width) // 2)
    outlines = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(0, len(CLASSES) - 2))
        s = float(rng.integers(lo, hi + 1))
        x0, y0 = float(rng.uniform(-s / 4, width - s * 0.75)), float(rng.uniform(-s / 4, height - s * 0.75))
        _shape(draw, kind, x0, y0, s, fill=kind + 3)
        if rng.random() < 0.3:
            outlines.append((kind, x0, y0, s))
    label = np.array(canvas)
    if outlines:                                                  # unlabelled boundaries (0), drawn last
        edge = Image.new('L', (width, height), 0)
        edraw = ImageDraw.Draw(edge)
        for kind, x0, y0, s in outlines:
            _shape(edraw, kind, x0, y0, s, fill=1, width=1)
        label[np.array(edge) > 0] = 0

    colours = np.clip(_BASE_COLOURS + rng.normal(0, 18, _BASE_COLOURS.shape), 0, 255)   # [8, 3] per image
    image = colours[np.maximum(label, 1) - 1]                                           # [H, W, 3]
    yy, xx = np.mgrid[0:height, 0:width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(5, 14)
    stripes = 10 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image = image + stripes[..., None] * (label <= 2)[..., None] + rng.normal(0, 10, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def _make_split(root: Path, split: str, stem: str, count: int, size: Sequence[int], seed: int,
                max_objects: int) -> None:
    img_dir, ann_dir = root / 'images' / split, root / 'annotations' / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, count + 1):
        image, label = make_scene(rng, int(size[0]), int(size[1]), max_objects=max_objects)
        name = f'{stem}_{i:08d}'
        Image.fromarray(image).save(img_dir / f'{name}.jpg', quality=95)
        tmp = ann_dir / f'{name}.png.tmp'
        Image.fromarray(label).save(tmp, format='PNG')
        os.replace(tmp, ann_dir / f'{name}.png')


GENERATOR = 'synthetic_ade'


def owned_files(params: Mapping[str, Any]) -> list[str]:
    """Paths (relative to the root) this generator writes for ``params``: images, label maps, temporaries."""
    files = []
    for split, stem, count in (('training', 'ADE_train', params['num_train']),
                               ('validation', 'ADE_val', params['num_val'])):
        for i in range(1, int(count) + 1):
            name = f'{stem}_{i:08d}'
            files += [f'images/{split}/{name}.jpg', f'annotations/{split}/{name}.png',
                      f'annotations/{split}/{name}.png.tmp']
    return files


def make_synthetic_ade(root: str | os.PathLike, *, num_train: int = 200, num_val: int = 40,
                       image_size: Sequence[int] = (96, 128), seed: int = 0, max_objects: int = 5,
                       overwrite: bool = False) -> Path:
    """Write the set under ``root``; returns ``root``. Reuse, regeneration and refusal of an existing folder
    follow its marker (:mod:`ropevit.data.generated_root`).

    Args:
        image_size: ``(H, W)`` of every image.
        seed: the training split uses ``seed``, the validation split ``seed + 1``.
    """
    params = generator_params(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed,
                              max_objects=max_objects)
    h, w = params['image_size']
    root = Path(root)
    _adopt_legacy_marker(root)
    if prepare_root(root, generator=GENERATOR, params=params, owned=owned_files, overwrite=overwrite):
        return root
    for split, stem, count, s in (('training', 'ADE_train', num_train, seed),
                                  ('validation', 'ADE_val', num_val, seed + 1)):
        _make_split(root, split, stem, count, (h, w), s, max_objects)
    write_marker(root, generator=GENERATOR, params=params, complete=True)
    return root


def _adopt_legacy_marker(root: Path) -> None:
    """Earlier versions wrote ``root/.complete`` holding ``"num_train num_val H W seed max_objects"``: turn it
    into the current marker, so such a folder is still recognised as this generator's."""
    legacy = root / '.complete'
    if not legacy.is_file() or (root / MARKER_NAME).exists():
        return
    try:
        num_train, num_val, h, w, seed, max_objects = (int(v) for v in legacy.read_text().split())
    except ValueError:
        return                                                   # not ours after all: leave it alone
    write_marker(root, generator=GENERATOR, complete=True, params=dict(
        num_train=num_train, num_val=num_val, image_size=[h, w], seed=seed, max_objects=max_objects))
    legacy.unlink()


def main() -> None:
    generator_main(make_synthetic_ade, description='Write a synthetic semantic segmentation set in the ADE20k layout.',
                   default_root='data/synthetic_ade', num_train=200, num_val=40, size=(96, 128), what='synthetic ADE20k-layout set')


if __name__ == '__main__':
    main()
