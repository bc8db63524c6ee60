"""Export of the backbones with dynamic sizes: the exported graph (torch.export, ONNX in
onnxruntime through both exporters) computes what eager PyTorch computes at sizes it never saw.

The two sides take different code: under an exporter the rotation is real-valued (eager:
complex), padding and masks are always computed (eager skips them when not needed), the
position embedding is resized by matrices (eager: ``F.interpolate(antialias=True)``), no
table is cached. Eager itself is checked against timm and mmdet elsewhere.

The full variant x exporter matrix is ``python -m ropevit.deploy.matrix`` (docs/DEPLOY.md
quotes its table); here, for CI's time, every variant goes through TorchScript ONNX, every ViT
variant and the 'original'-rule Swin through torch.export, and one ViT, one Swin and the
ViTDet + SimpleFPN through the dynamo ONNX exporter.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ropevit.deploy import compare, export_program
from ropevit.deploy.matrix import CHECK_SHAPES, VARIANTS, export_and_compare
from ropevit.layers import pos_embed, window

ATOL = 1e-4

VIT = [v for v in VARIANTS if v.startswith('vit-')]
CASES = ([(v, 'torchscript') for v in VARIANTS]
         + [(v, 'torch-export') for v in VIT]      # Swin: test_original_window_rule_... below
         + [(v, 'dynamo') for v in ('vit-mixed-global-cls-ape', 'swin-axial-rpb-original', 'vitdet+simplefpn')])


@pytest.mark.parametrize('variant,exporter', CASES, ids=[f'{v}-{e}' for v, e in CASES])
def test_exported_equals_eager_at_unseen_sizes(variant, exporter, tmp_path):
    diffs, _ = export_and_compare(VARIANTS[variant](), exporter, folder=str(tmp_path))
    assert len(diffs) == len(CHECK_SHAPES)
    assert max(diffs) <= ATOL, dict(zip(CHECK_SHAPES, diffs))


def test_check_shapes_are_unseen_and_awkward():
    from ropevit.deploy.matrix import EXPORT_SHAPE
    assert {s[0] for s in CHECK_SHAPES} == {1, 2}                       # batch 1 and > 1
    for _, _, h, w in CHECK_SHAPES:
        assert (h, w) != tuple(EXPORT_SHAPE[2:]) and h != w
        assert h % 16 and w % 16 and (h % 4 or w % 4)                      # not patch multiples


# ----------------------------------------------------------------------------- the pieces
@pytest.mark.parametrize('src,dst', [(4, 7), (7, 4), (14, 64), (14, 3), (5, 5), (3, 1), (1, 6)])
def test_aa_bicubic_weights_equal_torch_antialiased_bicubic(src, dst):
    """One axis of F.interpolate(bicubic, antialias=True), up and down, as a matrix (the other axis
    kept at 3 columns: PyTorch's antialiased kernel returns a constant for a 1-wide image)."""
    x = torch.randn(1, 1, src, 3, dtype=torch.float64)
    ref = F.interpolate(x, size=(dst, 3), mode='bicubic', antialias=True, align_corners=False)[0, 0]
    weights = pos_embed.aa_bicubic_weights(dst, src).double()              # [dst, src]
    assert weights.shape == (dst, src)
    torch.testing.assert_close(weights @ x[0, 0], ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize('dst', [(14, 14), (9, 23), (40, 6), (1, 5)])
def test_exported_pos_embed_resize_equals_eager(dst, monkeypatch):
    pe = torch.randn(1, 14 * 14, 8)
    ref = pos_embed.resample_pos_embed(pe, (14, 14), dst)
    monkeypatch.setattr(pos_embed, 'is_exporting', lambda: True)
    got = pos_embed.resample_pos_embed(pe, (14, 14), dst)
    assert got.shape == ref.shape == (1, dst[0] * dst[1], 8)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('padded,ws,shift,hw', [((8, 12), 4, 2, (7, 10)), ((12, 8), 4, 0, (9, 8)),
                                                ((6, 6), 3, 1, (6, 6)), ((4, 4), 4, 2, (3, 4))])
def test_branch_free_shift_mask_equals_eager(padded, ws, shift, hw, monkeypatch):
    ref = window.shifted_window_mask(padded, ws, shift, hw)
    monkeypatch.setattr(window, 'is_exporting', lambda: True)
    got = window.shifted_window_mask(padded, ws, shift, hw)
    assert ref is not None
    torch.testing.assert_close(got, ref)


def test_original_window_rule_exported_refuses_a_grid_not_larger_than_the_window():
    """An exported 'original' Swin covers grids larger than the window; a smaller input is refused
    at run time instead of computed with another window than eager would use."""
    model = VARIANTS['swin-axial-rpb-original']()
    program = export_program(model, torch.randn(2, 3, 64, 96)).module()
    # In range (every stage grid larger than the window): the unseen sizes, as for the other variants.
    diffs = compare(model, program, CHECK_SHAPES)
    assert max(diffs) <= ATOL, dict(zip(CHECK_SHAPES, diffs))
    with torch.no_grad():
        with pytest.raises(Exception, match=r'sym_min|window'):
            program(torch.randn(1, 3, 24, 90))                # stage 2: 3 x 12 tokens, window 4


def test_torch_export_round_trip_through_a_file(tmp_path):
    model = VARIANTS['vit-mixed-window']()
    program = export_program(model, torch.randn(2, 3, 64, 96))
    torch.export.save(program, str(tmp_path / 'vit.pt2'))
    loaded = torch.export.load(str(tmp_path / 'vit.pt2')).module()
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        for got, ref in zip(loaded(x), model(x)):
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def test_eager_keeps_the_complex_rotation_and_skips_unneeded_padding(monkeypatch):
    """Export forms are taken only under an exporter: eager calls no F.pad at a patch multiple and
    rotates with the complex product."""
    from ropevit.layers import rope
    model = VARIANTS['vit-mixed-window']()
    calls = {'pad': 0, 'real': 0}
    real_pad, real_rot = F.pad, rope._apply_rope_real
    monkeypatch.setattr(F, 'pad', lambda *a, **k: (calls.__setitem__('pad', calls['pad'] + 1), real_pad(*a, **k))[1])
    monkeypatch.setattr(rope, '_apply_rope_real',
                        lambda *a: (calls.__setitem__('real', calls['real'] + 1), real_rot(*a))[1])
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))                     # 4 x 4 patches, windows of 4: no padding
    assert calls == {'pad': 0, 'real': 0}
