"""ropevit.fileio: a write that fails half-way leaves the old file and no temporary behind."""
from __future__ import annotations

from pathlib import Path

import pytest

from ropevit.fileio import atomic_target, atomic_write


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / 'out.json'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_write(path, 'w') as f:
            f.write('partial new content')
            raise RuntimeError('killed half-way')
    assert path.read_text() == 'old' and sorted(p.name for p in tmp_path.iterdir()) == ['out.json']
    with pytest.raises(RuntimeError):
        with atomic_target(tmp_path / 'plot.png') as tmp:
            Path(tmp).write_bytes(b'half a png')
            raise RuntimeError('killed half-way')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.json']


def test_atomic_write_refuses_modes_it_cannot_make_atomic(tmp_path):
    target = tmp_path / 'f.txt'
    target.write_text('old')
    with pytest.raises(ValueError, match='"w" or "wb"'):
        with atomic_write(target, 'a'):
            pass
    assert target.read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['f.txt']
