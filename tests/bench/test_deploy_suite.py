"""The benchmark's deploy suite: onnxruntime against eager, parity first, on tiny models."""
from __future__ import annotations

import pytest
import torch

from benchmarks import suites
from benchmarks.measure import ParityError
from benchmarks.report import Results
from benchmarks.runner import BenchConfig

TINY_VIT = dict(embed_dims=64, depth=3, num_heads=2)
TINY_SWIN = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))


def _cfg() -> BenchConfig:
    return BenchConfig(device=torch.device('cpu'), warmup=0, reps=1, memory=False, log=lambda m: None)


def _run(res: Results) -> None:
    suites.deploy_check(res, _cfg(), vit_arch=TINY_VIT, vit_size=(80, 112), window_size=4, global_blocks=(2,),
                        swin_arch=TINY_SWIN, swin_size=(96, 136), exporter='torchscript')


def test_deploy_suite_rows_ratios_and_unseen_size():
    res = Results()
    _run(res)
    assert [r.impl for r in res.rows] == ['ropevit', 'onnxruntime'] * 2
    assert len(res.ratios) == 2 and all('onnxruntime' in r.name for r in res.ratios)
    for row in res.rows[1::2]:
        assert row.parity.startswith('max abs diff')
        assert float(row.parity.split()[3]) <= 1e-3
        assert row.extra['traced_at'] != f'{row.size[0]}x{row.size[1]}'   # timed at a size it never saw
        assert row.time.median > 0


def test_deploy_suite_refuses_to_time_a_wrong_export(monkeypatch):
    from ropevit import deploy
    real = deploy.run_onnx
    monkeypatch.setattr(deploy, 'run_onnx', lambda s, x: [o + 1e-2 for o in real(s, x)])
    with pytest.raises(ParityError, match='onnxruntime vs eager'):
        _run(Results())
