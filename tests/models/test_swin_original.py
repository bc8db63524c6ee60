"""The original RoPE-Swin (naver-ai/rope-vit, on Microsoft's Swin) reproduced through
``init_cfg``: a checkpoint in the original layout (built from its key list by
``tests/swin_reference.py``, not from RoPESwin) loaded into RoPESwin with
``window_rule='original'`` gives the original forward's stage features, computed by the
float64 reference of that forward; with mmdet's rule the last stage at 224 differs. Plain
Swin with the original rule also equals timm's ``SwinTransformer`` (independent code).

What is compared: each stage's block output before its patch merging (RoPESwin's outputs
with the detection-only output norms ``norm<i>`` replaced by identity), and the last stage
after the classifier's ``norm`` of the checkpoint (what the original's ``forward_features``
pools).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ropevit.mm  # noqa: F401  (registers RoPESwin)
from mmengine.registry import MODELS
from swin_reference import original_forward, original_state_dict

# Swin-T's layout at reduced width (patch 4, window 7, four stages; at 224 the grids are
# 56, 28, 14 and 7: the last stage is one window, the case that needs the original rule).
ARCH = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
TOL = 1e-5


def _load(tmp_path, sd: dict, *, rope: str, use_rpb: bool, window_rule: str, window_size: int = 7,
          arch: dict = ARCH) -> nn.Module:
    path = tmp_path / 'original.pth'
    torch.save({'model': sd}, path)
    m = MODELS.build(dict(type='RoPESwin', **arch, rope=rope, use_rpb=use_rpb, window_size=window_size,
                          window_rule=window_rule, drop_path_rate=0.0,
                          init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    m.init_weights()
    for i in m.out_indices:
        setattr(m, f'norm{i}', nn.Identity())        # compare the stage maps themselves
    return m.double().eval()


def _diffs(model: nn.Module, sd: dict, x: torch.Tensor, *, rope: str, window_size: int = 7,
           arch: dict = ARCH) -> list[float]:
    """Max |ours - original| per stage, then for the last stage after the classifier norm."""
    with torch.no_grad():
        got = model(x.double())
        maps, final = original_forward(sd, x, depths=arch['depths'], num_heads=arch['num_heads'],
                                       window_size=window_size, rope=rope)
    assert [g.shape for g in got] == [m.shape for m in maps]
    normed = F.layer_norm(got[-1].permute(0, 2, 3, 1), got[-1].shape[1:2], sd['norm.weight'].double(),
                          sd['norm.bias'].double()).permute(0, 3, 1, 2)
    return [(g - e).abs().max().item() for g, e in zip(got, maps)] + [(normed - final).abs().max().item()]


def _case(tmp_path, rope, use_rpb, size, *, window_rule='original', window_size=7, seed=0):
    sd = original_state_dict(**ARCH, window_size=window_size, img_size=size, rope=rope, use_rpb=use_rpb, seed=seed)
    model = _load(tmp_path, sd, rope=rope, use_rpb=use_rpb, window_rule=window_rule, window_size=window_size)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed + 1))
    return _diffs(model, sd, x, rope=rope, window_size=window_size)


@pytest.mark.parametrize('rope,use_rpb', [('mixed', False), ('axial', False), ('mixed', True)])
def test_original_rope_swin_at_224(tmp_path, rope, use_rpb):
    diffs = _case(tmp_path, rope, use_rpb, (224, 224))
    assert max(diffs) <= TOL, diffs


@pytest.mark.parametrize('rope', ['mixed', 'axial'])
def test_original_rope_swin_non_square(tmp_path, rope):
    # 224x448: grids 56x112 ... 7x14; the last stage (min 7 <= 7) has two unshifted windows.
    diffs = _case(tmp_path, rope, False, (224, 448))
    assert max(diffs) <= TOL, diffs


def test_original_rope_swin_smaller_effective_window(tmp_path):
    # Window 6 at 96: grids 24, 12, 6, 3. Stage 2 is one unshifted 6x6 window, stage 3 uses
    # a 3x3 window (RoPE coordinates 0..2), as the original built with img_size=96 does.
    diffs = _case(tmp_path, 'mixed', False, (96, 96), window_size=6)
    assert max(diffs) <= TOL, diffs


@pytest.mark.parametrize('rope', ['mixed', 'axial'])
def test_mmdet_rule_differs_in_the_last_stage_at_224(tmp_path, rope):
    diffs = _case(tmp_path, rope, False, (224, 224), window_rule='mmdet')
    assert max(diffs[:3]) <= TOL, diffs                # stages 0-2: grids larger than a window
    assert diffs[3] > 1e-3, diffs                      # stage 3: shifted, padded 7x7 vs one window


def test_original_tiny_preset_at_224(tmp_path):
    # The published Swin-T layout itself (96 / [2, 2, 6, 2] / [3, 6, 12, 24]), RoPE-Mixed.
    arch = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    sd = original_state_dict(**arch, window_size=7, img_size=(224, 224), rope='mixed', use_rpb=False, seed=3)
    model = _load(tmp_path, sd, rope='mixed', use_rpb=False, window_rule='original', arch=dict(arch='tiny'))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    diffs = _diffs(model, sd, x, rope='mixed', arch=arch)
    assert max(diffs) <= TOL, diffs


def test_plain_swin_original_rule_matches_timm(tmp_path):
    from timm.models import swin_transformer as timm_swin
    # Microsoft's plain Swin (relative position bias, no RoPE), built from its key list,
    # into timm through timm's own converter of Microsoft checkpoints, and into RoPESwin
    # through init_cfg.
    sd = original_state_dict(**ARCH, window_size=7, img_size=(224, 224), rope='none', use_rpb=True, seed=5)
    ref = timm_swin.SwinTransformer(img_size=224, patch_size=4, window_size=7, embed_dim=ARCH['embed_dims'],
                                    depths=ARCH['depths'], num_heads=ARCH['num_heads'], num_classes=10,
                                    drop_path_rate=0.0)
    ref.load_state_dict(timm_swin.checkpoint_filter_fn({'model': dict(sd)}, ref), strict=True)
    ref = ref.double().eval()
    ours = _load(tmp_path, sd, rope='none', use_rpb=True, window_rule='original')
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        t = ref.patch_embed(x)                                            # [B, H, W, C]
        expected = []
        for layer in ref.layers:                                          # timm: merging first, then blocks
            t = layer(t)
            expected.append(t.permute(0, 3, 1, 2))
        got = ours(x)
        mmdet_rule = _load(tmp_path, sd, rope='none', use_rpb=True, window_rule='mmdet')(x)
    diffs = [(g - e).abs().max().item() for g, e in zip(got, expected)]
    assert max(diffs) <= TOL, diffs
    assert (mmdet_rule[3] - expected[3]).abs().max().item() > 1e-3        # the rule matters here too
