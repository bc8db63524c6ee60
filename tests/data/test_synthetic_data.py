"""The generated data sets are reused only for the request that made them, and never cost a user a file.

ropevit.data.synthetic_coco and synthetic_ade record their parameters in a marker: the same request reuses
the folder untouched, another seed or size regenerates it (the result equals a fresh folder made with that
request, and files the generator did not write survive), an interrupted run is redone, and a non-empty
folder that the generator did not write is refused unless overwrite is asked for.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ropevit.data.synthetic_ade import make_synthetic_ade
from ropevit.data.synthetic_coco import make_synthetic_coco

ROOT = Path(__file__).resolve().parents[2]
COCO = dict(num_train=2, num_val=1, image_size=(32, 40), seed=0, max_objects=2)
ADE = dict(num_train=2, num_val=1, image_size=(24, 32), seed=0, max_objects=2)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the marker, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and not p.name.startswith('.ropevit_generated')}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()}


def test_coco_same_request_reuses_the_folder(tmp_path):
    make_synthetic_coco(tmp_path / 'c', **COCO)
    before = _mtimes(tmp_path / 'c')
    make_synthetic_coco(tmp_path / 'c', **COCO)
    assert _mtimes(tmp_path / 'c') == before


@pytest.mark.parametrize('change', [dict(seed=1), dict(num_train=1), dict(num_train=3), dict(image_size=(48, 36)),
                                    dict(max_objects=5)], ids=lambda d: '-'.join(f'{k}={v}' for k, v in d.items()))
def test_coco_other_request_regenerates(tmp_path, change):
    root = tmp_path / 'c'
    make_synthetic_coco(root, **COCO)
    old = _tree(root)
    (root / 'train2017' / 'notes.txt').write_text('mine')            # a user's files, in and beside the set
    (root / 'README').write_text('mine too')
    request = dict(COCO, **change)
    make_synthetic_coco(root, **request)
    fresh = _tree(make_synthetic_coco(tmp_path / 'fresh', **request))
    got = _tree(root)
    assert got.pop('train2017/notes.txt') == b'mine' and got.pop('README') == b'mine too'
    assert got == fresh                      # exactly the requested set: no stale image of the old request
    assert got != old                        # (the request did change the set)
    ann = json.loads((root / 'annotations' / 'instances_train2017.json').read_text())
    assert len(ann['images']) == request['num_train']
    h, w = request['image_size']
    for im in ann['images']:
        assert Image.open(root / 'train2017' / im['file_name']).size == (w, h)


def test_coco_interrupted_run_is_redone(tmp_path, monkeypatch):
    import ropevit.data.synthetic_coco as gen
    real = gen._make_split

    def crash_on_val(root, split, *args):
        if split == 'val':
            raise KeyboardInterrupt
        return real(root, split, *args)

    monkeypatch.setattr(gen, '_make_split', crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_coco(tmp_path / 'c', **COCO)
    monkeypatch.setattr(gen, '_make_split', real)
    assert not (tmp_path / 'c' / 'annotations' / 'instances_val2017.json').exists()
    make_synthetic_coco(tmp_path / 'c', **COCO)                     # no --overwrite needed: it is our folder
    assert _tree(tmp_path / 'c') == _tree(make_synthetic_coco(tmp_path / 'fresh', **COCO))


def test_coco_refuses_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / 'user'
    (root / 'train2017').mkdir(parents=True)
    (root / 'train2017' / '000000000001.jpg').write_bytes(b'a user photo')
    with pytest.raises(FileExistsError, match=r"root='.*user' is not empty .*overwrite=True"):
        make_synthetic_coco(root, **COCO)
    assert _tree(root) == {'train2017/000000000001.jpg': b'a user photo'}  # nothing touched, no marker
    assert not any(p.name.startswith('.ropevit') for p in root.iterdir())
    (root / 'keep.txt').write_text('keep')
    make_synthetic_coco(root, **COCO, overwrite=True)                # asked for: written into it
    got = _tree(root)
    assert got.pop('keep.txt') == b'keep'
    assert got == _tree(make_synthetic_coco(tmp_path / 'fresh', **COCO))
    with pytest.raises(FileExistsError, match='is a file'):
        make_synthetic_coco(root / 'keep.txt', **COCO)


def test_coco_command_line_refusal_names_the_fix(tmp_path):
    (tmp_path / 'user').mkdir()
    (tmp_path / 'user' / 'data.json').write_text('{}')
    r = subprocess.run([sys.executable, '-m', 'ropevit.data.synthetic_coco', str(tmp_path / 'user'), '--seed', '1'],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    assert '--overwrite' in r.stderr and str(tmp_path / 'user') in r.stderr, r.stderr


@pytest.mark.parametrize('bad, match', [(dict(image_size=(8, 64)), 'image_size'), (dict(num_val=0), 'num_val'),
                                        (dict(max_objects=0), 'max_objects'), (dict(image_size=(32,)), 'image_size')])
def test_coco_bad_request_is_a_clear_error(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_coco(tmp_path / 'c', **dict(COCO, **bad))
    assert not (tmp_path / 'c').exists()


def test_ade_other_request_regenerates_and_spares_user_files(tmp_path):
    root = tmp_path / 'a'
    make_synthetic_ade(root, **ADE)
    before = _mtimes(root)
    make_synthetic_ade(root, **ADE)
    assert _mtimes(root) == before
    (root / 'images' / 'training' / 'my_photo.jpg').write_bytes(b'mine')
    request = dict(ADE, seed=3, num_train=1)
    make_synthetic_ade(root, **request)
    got = _tree(root)
    assert got.pop('images/training/my_photo.jpg') == b'mine'
    assert got == _tree(make_synthetic_ade(tmp_path / 'fresh', **request))


def test_ade_refuses_a_real_ade_folder(tmp_path):
    """Pointed at a folder that holds real data (no marker), the generator must not delete or add anything."""
    root = tmp_path / 'ADEChallengeData2016'
    (root / 'images' / 'training').mkdir(parents=True)
    (root / 'images' / 'training' / 'ADE_train_00000001.jpg').write_bytes(b'real')
    with pytest.raises(FileExistsError, match='overwrite'):
        make_synthetic_ade(root, **ADE)
    assert _tree(root) == {'images/training/ADE_train_00000001.jpg': b'real'}


def test_ade_folder_of_the_earlier_marker_is_still_recognised(tmp_path):
    """Earlier versions marked a complete set with ``.complete`` = "num_train num_val H W seed max_objects"."""
    root = tmp_path / 'a'
    make_synthetic_ade(root, **ADE)
    (root / '.ropevit_generated.json').unlink()
    h, w = ADE['image_size']
    (root / '.complete').write_text(f"{ADE['num_train']} {ADE['num_val']} {h} {w} {ADE['seed']} {ADE['max_objects']}")
    before = _mtimes(root)
    make_synthetic_ade(root, **ADE)                                    # the same request: reused
    assert {k: v for k, v in _mtimes(root).items() if not k.startswith('.')} == \
        {k: v for k, v in before.items() if not k.startswith('.')}
    make_synthetic_ade(root, **dict(ADE, seed=1))                      # another: regenerated, no refusal
    assert _tree(root) == _tree(make_synthetic_ade(tmp_path / 'fresh', **dict(ADE, seed=1)))
