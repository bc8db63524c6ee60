"""tools/analyze_model.py: parameter count, FLOPs (mmengine's FlopAnalyzer) and RoPE settings."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, 'tools', 'analyze_model.py')
MMDET_SWIN_T = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'


def _load_tool():
    spec = importlib.util.spec_from_file_location('analyze_model', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyze_model = _load_tool()


class _Attention(nn.Module):
    """``softmax(q k^T / sqrt(hd)) v`` either fused (SDPA) or with explicit matmuls."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v)
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)           # [B, nh, Nq, Nk]
        return attn.softmax(-1) @ v                                        # [B, nh, Nq, hdv]


def test_sdpa_counts_like_explicit_matmuls():
    batch, heads, n_q, n_k, hd, hdv = 2, 3, 10, 7, 8, 12
    q, k, v = torch.rand(batch, heads, n_q, hd), torch.rand(batch, heads, n_k, hd), torch.rand(batch, heads, n_k, hdv)
    fused, unsupported_fused = analyze_model.count_flops(_Attention(True), (q, k, v))
    explicit, _ = analyze_model.count_flops(_Attention(False), (q, k, v))
    assert fused == explicit == batch * heads * n_q * n_k * (hd + hdv)
    assert analyze_model.SDPA_OP not in unsupported_fused


def test_rope_settings_of_a_backbone_without_rope():
    assert analyze_model.rope_settings(nn.Linear(2, 2)) == {'type': 'none'}


def test_rope_settings_name_the_coordinate_rule_and_the_prefix_tokens():
    from ropevit.models.vit import RoPEViT
    arch = dict(embed_dims=32, num_heads=2, depth=2)
    dinov3 = analyze_model.rope_settings(RoPEViT.from_preset('dinov3', arch=arch, window_size=2))
    assert dinov3['rope_coords'] == 'normalized' and dinov3['num_prefix_tokens'] == 5       # class + 4 registers
    assert dinov3['type'] == 'axial' and dinov3['theta'] == 100.0 and dinov3['window_size'] == 2
    eva02 = analyze_model.rope_settings(RoPEViT.from_preset('eva02', arch=arch))
    assert eva02['rope_coords'] == 'interpolate' and eva02['num_prefix_tokens'] == 1 and eva02['theta'] == 1e4


def test_mmdet_swin_t_matches_the_published_size(tmp_path):
    """Swin-T at 224x224: 28M params with its classifier, 4.5 GFLOPs (Liu et al. 2021, Table 1).

    mmdet's SwinTransformer (no classifier head) has 27.52M parameters; the FLOPs are the
    published 4.5G, counted here through the tool's own code path.
    """
    from mmengine.config import Config
    cfg_path = tmp_path / 'swin.py'
    cfg_path.write_text(f'_base_ = {MMDET_SWIN_T!r}\n')
    cfg = Config.fromfile(str(cfg_path))
    result = analyze_model.analyze(cfg, shape=(224, 224), backbone_only=True)
    assert result['backbone'] == 'SwinTransformer'
    assert result['backbone_params'] == 27_520_698
    assert result['backbone_flops'] / 1e9 == pytest.approx(4.5, abs=0.05)
    assert result['rope'] == {'type': 'none'}
    assert 'model_flops' not in result


def test_bad_shape_is_rejected(tmp_path):
    from mmengine.config import Config
    cfg_path = tmp_path / 'swin.py'
    cfg_path.write_text(f'_base_ = {MMDET_SWIN_T!r}\n')
    with pytest.raises(ValueError, match='--shape'):
        analyze_model.analyze(Config.fromfile(str(cfg_path)), shape=(0, 64))


PLUGIN_DET = os.path.join(ROOT, 'projects', 'plugin_example', 'configs', 'mask-rcnn_rope-swin-t-p4-w7_fpn_1x_coco.py')


def _run_tool(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=110)


def test_rope_swin_without_rope_counts_like_mmdet_swin(tmp_path):
    """RoPESwin(rope='none', use_rpb=True) is plain Swin: the tool must give mmdet's Swin-T numbers,
    although ours runs F.scaled_dot_product_attention and mmdet's explicit matmuls."""
    from mmengine.config import Config
    plain = Config.fromfile(PLUGIN_DET)
    plain.merge_from_dict({'model.backbone.rope': 'none', 'model.backbone.use_rpb': True})
    ours = analyze_model.analyze(plain, shape=(224, 224), backbone_only=True)
    ref_path = tmp_path / 'swin.py'
    ref_path.write_text(f'_base_ = {MMDET_SWIN_T!r}\n')
    theirs = analyze_model.analyze(Config.fromfile(str(ref_path)), shape=(224, 224), backbone_only=True)
    assert ours['backbone'] == 'RoPESwin' and theirs['backbone'] == 'SwinTransformer'
    assert ours['backbone_params'] == theirs['backbone_params'] == 27_520_698
    assert ours['backbone_flops'] == theirs['backbone_flops']
    assert ours['rope']['type'] == 'none' and ours['rope']['use_rpb'] is True


@pytest.mark.timeout(120)
def test_cli_prints_finite_numbers_for_a_swin_config(tmp_path):
    out = tmp_path / 'swin.json'
    done = _run_tool(PLUGIN_DET, '--shape', '64', '96', '--json', str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'RoPESwin' in done.stdout and 'type=mixed' in done.stdout and 'frequencies=learnable' in done.stdout
    result = json.loads(out.read_text())
    assert result['input_shape'] == [1, 3, 64, 96] and result['model'] == 'MaskRCNN'
    for key in ('backbone_flops', 'model_flops', 'backbone_params', 'model_params'):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result['model_flops'] > result['backbone_flops']
    assert result['model_params'] > result['backbone_params']
    rope = result['rope']
    assert rope['theta'] == 10.0 and rope['window_size'] == 7 and rope['use_rpb'] is False
    # RoPE-Mixed frequencies: C per block (x and y for nh heads of hd // 2 pairs)
    assert rope['learnable_frequency_params'] == 2 * 96 + 2 * 192 + 6 * 384 + 2 * 768


def test_axial_rope_reports_fixed_frequencies():
    from mmengine.config import Config
    cfg = Config.fromfile(PLUGIN_DET)
    cfg.merge_from_dict({'model.backbone.rope': 'axial', 'model.backbone.arch': 'tiny',
                         'model.backbone.depths': [2, 2], 'model.backbone.num_heads': [3, 6],
                         'model.backbone.out_indices': [0, 1], 'model.neck.in_channels': [96, 192],
                         'model.neck.num_outs': 5})
    result = analyze_model.analyze(cfg, shape=(64, 64), backbone_only=True)
    assert result['rope']['type'] == 'axial' and result['rope']['frequencies'] == 'fixed'
    assert result['rope']['theta'] == 50.0 and result['rope']['learnable_frequency_params'] == 0


@pytest.mark.timeout(120)
def test_cli_prints_finite_numbers_for_a_vit_config(tmp_path):
    out = tmp_path / 'vit.json'
    done = _run_tool(os.path.join(ROOT, 'configs', 'upernet_rope_vit_s_ade20k.py'), '--shape', '64',
                     '--backbone-only', '--json', str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'RoPEViT' in done.stdout and 'type=mixed' in done.stdout
    result = json.loads(out.read_text())
    assert result['backbone'] == 'RoPEViT' and result['scope'] == 'mmseg'
    assert math.isfinite(result['backbone_flops']) and result['backbone_flops'] > 0
    # ViT-S/16 on 4x4 patches: 12 blocks of qkv/proj/mlp matmuls (384 wide) dominate: > 12*16*384*384*12
    assert result['backbone_flops'] > 12 * 16 * 384 * 384 * 12
    assert result['rope']['learnable_frequency_params'] > 0 and result['rope']['frequencies'] == 'learnable'
