"""tools/export.py end to end on the demo configs: the detector's backbone + neck and the whole
segmentor, exported with dynamic sizes and checked in onnxruntime at sizes the export never saw
(an independent check here, beside the tool's own); bad input is one line and writes nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DET = ROOT / 'configs' / 'demo' / 'mask_rcnn_rope_swin_demo.py'
SEG = ROOT / 'configs' / 'demo' / 'upernet_rope_swin_demo_seg.py'


def _run(args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='2', PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'export.py'), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _build(config: Path):
    sys.path.insert(0, str(ROOT / 'tools'))
    import export
    from _common import load_config
    cfg = load_config(str(config), None, None)
    return export.build(cfg, None, False, 'cpu')


def _onnx_vs_eager(path: Path, module, shape) -> float:
    import onnxruntime as ort
    torch.manual_seed(3)
    x = torch.randn(*shape)
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        refs = module(x)
    refs = [refs] if isinstance(refs, torch.Tensor) else list(refs)
    assert [tuple(o.shape) for o in outs] == [tuple(r.shape) for r in refs]
    return max((torch.from_numpy(o) - r).abs().max().item() for o, r in zip(outs, refs))


def test_export_det_backbone_and_neck_torchscript_with_a_checkpoint(tmp_path: Path):
    from ropevit.mm.deploy import FeaturePyramid
    model, _ = _build(DET)
    ckpt = tmp_path / 'det.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = tmp_path / 'det.onnx'
    r = _run([DET, ckpt, '--torchscript', '--shape', 96, 128, '--out', out], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'backbone+neck' in r.stdout and 'RoIAlign' in r.stdout          # says what is not exported
    assert 'verified: max difference' in r.stdout
    assert '1x3x79x149' in r.stdout                                         # an unseen size was checked
    # The file holds the checkpoint's weights: it equals this eager model at another unseen size.
    assert _onnx_vs_eager(out, FeaturePyramid(model).eval(), (2, 3, 70, 111)) <= 1e-4


def test_export_whole_segmentor(tmp_path: Path):
    # TorchScript here for CI's time (the dynamo exporter takes minutes on this model on 2 cores; both
    # exporters are checked on every backbone in tests/deploy); the pyramid pooling is swapped for its
    # exportable form either way.
    out = tmp_path / 'seg.onnx'
    r = _run([SEG, '--torchscript', '--shape', 96, 128, '--out', out], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'segmentor' in r.stdout and 'verified: max difference' in r.stdout
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    (logits,) = sess.run(None, {'image': torch.randn(1, 3, 75, 101).numpy()})
    from mmengine.config import Config
    classes = Config.fromfile(str(SEG)).model.decode_head.num_classes
    assert logits.shape == (1, classes, 75, 101)                              # per-class logits at the input size


TINY_VITDET = """
_base_ = {base!r}
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=64, num_heads=2, depth=2), window_size=4, global_attn_indexes=(1,),
                  out_indices=(1,), init_cfg=None),
    neck=dict(backbone_channel=64, in_channels=[16, 32, 64, 64], out_channels=16))
"""


def test_export_torch_export_format_round_trips(tmp_path: Path):
    """A ViTDet-style detector (windowed RoPEViT + SimpleFPN) as a .pt2 program; a Swin detector's four
    stages take minutes to trace symbolically on 2 cores (the ONNX tests above cover the Swin demo)."""
    cfg = tmp_path / 'vitdet_tiny.py'
    cfg.write_text(TINY_VITDET.format(base=str(ROOT / 'configs' / 'mask_rcnn_rope_vit_b.py')))
    out = tmp_path / 'det.pt2'
    r = _run([cfg, '--format', 'torch-export', '--shape', 64, 96, '--batch', 2, '--out', out], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'verified: max difference' in r.stdout
    program = torch.export.load(str(out)).module()
    feats = program(torch.randn(1, 3, 70, 83))                                  # 5 x 6 patches
    assert [tuple(f.shape[2:]) for f in feats] == [(20, 24), (10, 12), (5, 6), (3, 3), (2, 2)]


@pytest.mark.parametrize('args,message', [
    (['--format', 'torch-export', '--torchscript'], '--torchscript chooses the ONNX exporter'),
    (['--shape', '16', '200'], 'both sides must be >= 32'),
    (['--batch', '0'], '--batch 0'),
])
def test_bad_options_are_one_line_and_write_nothing(args, message, tmp_path: Path):
    r = _run([DET, *args, '--out', tmp_path / 'x.onnx'], tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and not (tmp_path / 'x.onnx').exists()


def test_out_over_an_input_is_refused(tmp_path: Path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(DET.read_text().replace("'../", f"'{DET.parent.parent}/"))
    before = cfg.read_bytes()
    r = _run([cfg, '--out', cfg], tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert cfg.read_bytes() == before


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path):
    ckpt = tmp_path / 'wrong.pth'
    torch.save({'state_dict': {'backbone.not_a_key': torch.zeros(3)}}, ckpt)
    r = _run([DET, ckpt, '--out', tmp_path / 'x.onnx'], tmp_path)
    assert r.returncode == 2 and 'backbone.not_a_key' in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and not (tmp_path / 'x.onnx').exists()
