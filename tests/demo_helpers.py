"""Shared by the reliability tests that run the demo detector config through the real command-line tools.

The demo config is shrunk with ``--cfg-options`` (a 1-block-per-stage RoPE-Swin of width 32, 32-channel
FPN and heads, 64 px images), trained on a small generated COCO-format set.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / 'tests' / 'resume_driver.py'
TRAIN = ROOT / 'tools' / 'train.py'
DIST_TRAIN = ROOT / 'tools' / 'dist_train.sh'


def demo_config() -> Path:
    found = sorted((ROOT / 'configs' / 'demo').glob('*.py'))
    if not found:
        raise FileNotFoundError(f'no demo config under {ROOT / "configs" / "demo"}')
    return found[0]


def make_coco(root: Path, *, count: int = 4, size: int = 64) -> Path:
    """COCO json + JPEGs with boxes and polygon masks of two classes (the demo's format)."""
    import numpy as np
    from PIL import Image
    (root / 'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(count):
        img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        for cat, (x, y, w, h) in ((1, (4 + i, 6, 20, 16)), (2, (34, 30 - i, 24, 28))):
            img[y:y + h, x:x + w] = (220, 40, 40) if cat == 1 else (40, 40, 220)
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cat, bbox=[x, y, w, h], area=w * h,
                             iscrowd=0, segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
        Image.fromarray(img).save(root / 'images' / f'{i}.jpg', quality=95)
        images.append(dict(id=i + 1, file_name=f'{i}.jpg', height=size, width=size))
    (root / 'train.json').write_text(json.dumps(dict(
        images=images, annotations=anns, categories=[dict(id=1, name='red'), dict(id=2, name='blue')])))
    return root


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))


def run(cmd: Sequence[str], timeout: int = 150) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, env=env(),
                          timeout=timeout)


def train(config: Path, work_dir: Path, options: Sequence[str], *, kill: Optional[str] = None,
          record: Optional[Path] = None, resume: bool = False, amp: bool = False,
          rope_report: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``tools/train.py CONFIG --work-dir W [--resume] [--amp] --cfg-options ...`` in a subprocess,
    through resume_driver.py (which arms the kill and records the data order)."""
    cmd: list = [sys.executable, DRIVER]
    cmd += ['--kill', kill] if kill else []
    cmd += ['--record', record] if record else []
    cmd += ['--rope-report', rope_report] if rope_report else []
    cmd += [TRAIN, config, '--work-dir', work_dir] + (['--resume'] if resume else []) + (['--amp'] if amp else [])
    cmd += ['--cfg-options', *options]
    return run(cmd)


def records(path: Path) -> list[tuple[int, str]]:
    return [(int(a), b) for a, b in (line.split() for line in path.read_text().splitlines())]
