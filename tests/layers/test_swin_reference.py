"""RoPESwin's (shifted) window attention against a float64 reference written from the
formulas (``tests/swin_reference.py``: explicit 2x2 RoPE rotations, roll, Swin's region mask,
zero padding, the bias table by offsets; it imports nothing from ``ropevit``).

Checked per stage (all blocks, W-MSA and SW-MSA, norms and MLP) at square, non-square and
non-window-multiple grids, grids smaller than a window, mixed / axial / no RoPE, with and
without the relative position bias, padding masked or not, and both window rules.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ropevit.models.swin import RoPESwin
from swin_reference import original_window, window_attention

C, NH = 16, 2                                     # head dim 8: two x-pairs, two y-pairs


def _axial_freqs(head_dim: int, theta: float) -> torch.Tensor:
    """RoPE-Axial from the paper: x-pairs first, then y-pairs, ``m_k = theta^(-4k/hd)``."""
    m = torch.tensor([theta ** (-4 * k / head_dim) for k in range(head_dim // 4)], dtype=torch.float64)
    z = torch.zeros_like(m)
    return torch.stack([torch.cat([m, z]), torch.cat([z, m])])[:, None].expand(2, NH, head_dim // 2)


def _model(rope: str, use_rpb: bool, window_size: int, rule: str, mask_padding: bool = True) -> RoPESwin:
    torch.manual_seed(0)
    m = RoPESwin(arch=dict(embed_dims=C, depths=[2], num_heads=[NH]), rope=rope, use_rpb=use_rpb,
                 window_size=window_size, window_rule=rule, mask_padding=mask_padding, drop_path_rate=0.0,
                 out_indices=(0,)).double().eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith('qkv.weight'):
                p.normal_(0, 1.5 / math.sqrt(C))          # peaked attention: windows and shifts matter
            elif name.endswith('relative_position_bias_table'):
                p.normal_(0, 1.0)
            elif name.endswith('rope_freqs'):
                p.add_(0.3 * torch.randn_like(p))           # learned-looking, not the init pattern
            elif 'norm' in name:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _reference_stage(model: RoPESwin, x: torch.Tensor, hw: tuple[int, int], rule: str,
                     mask_padding: bool = True) -> torch.Tensor:
    """Blocks of stage 0 from the formulas: x + WMSA(LN(x)), x + MLP(LN(x))."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    ws0 = model.window_size
    ws, shift = original_window(hw, ws0) if rule == 'original' else (ws0, ws0 // 2)

    def ln(t, p):
        return F.layer_norm(t, (C,), sd[p + '.weight'], sd[p + '.bias'])

    for j in range(len(model.stages[0].blocks)):
        p = f'stages.0.blocks.{j}.'
        if model.rope_type == 'mixed':
            freqs = sd[p + 'attn.w_msa.rope_freqs']                                  # [2, nh, hd/2]
        elif model.rope_type == 'axial':
            freqs = _axial_freqs(C // NH, model.rope_theta)
        else:
            freqs = None
        x = x + window_attention(
            ln(x, p + 'norm1'), hw, qkv_w=sd[p + 'attn.w_msa.qkv.weight'], qkv_b=sd[p + 'attn.w_msa.qkv.bias'],
            proj_w=sd[p + 'attn.w_msa.proj.weight'], proj_b=sd[p + 'attn.w_msa.proj.bias'], num_heads=NH,
            window_size=ws, shift_size=shift if j % 2 else 0, freqs=freqs,
            bias_table=sd.get(p + 'attn.w_msa.relative_position_bias_table'), table_window=ws0,
            mask_padding=mask_padding)
        h = F.gelu(ln(x, p + 'norm2') @ sd[p + 'ffn.layers.0.0.weight'].t() + sd[p + 'ffn.layers.0.0.bias'])
        x = x + h @ sd[p + 'ffn.layers.1.weight'].t() + sd[p + 'ffn.layers.1.bias']
    return x


def _compare(model, hw, rule, mask_padding=True) -> float:
    x = torch.randn(2, hw[0] * hw[1], C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.stages[0](x, hw)[2]                    # blocks' output, before patch merging
        exp = _reference_stage(model, x, hw, rule, mask_padding)
    return (got - exp).abs().max().item()


# Angles and their cos/sin are float32 in ropevit (documented), hence 1e-6 and not 1e-12.
TOL = 1e-6


@pytest.mark.parametrize('rule', ['mmdet', 'original'])
@pytest.mark.parametrize('hw', [(13, 10), (8, 8), (3, 5), (4, 9), (2, 7)])
@pytest.mark.parametrize('rope,use_rpb', [('mixed', False), ('axial', False), ('mixed', True), ('none', True)])
def test_stage_equals_reference(rope, use_rpb, hw, rule):
    # ws=4: (13, 10) and (8, 8) are larger than a window (same under both rules; padded and
    # shifted); (3, 5), (4, 9), (2, 7) fit in one window row: the original rule uses window
    # 3, 4, 2 without shift (RoPE coordinates 0..ws'-1, bias table by the actual offsets).
    model = _model(rope, use_rpb, 4, rule)
    assert _compare(model, hw, rule) <= TOL


@pytest.mark.parametrize('rope,use_rpb', [('mixed', False), ('none', True)])
def test_unmasked_padding_equals_reference(rope, use_rpb):
    # mask_padding=False (mmdet's Swin): zero-padded tokens take part as keys.
    model = _model(rope, use_rpb, 4, 'mmdet', mask_padding=False)
    assert _compare(model, (13, 10), 'mmdet', mask_padding=False) <= TOL


def test_larger_inference_window_equals_reference():
    # A window of 12 (weights trained with 7: RoPE has no table) on a 17x13 grid: padded
    # to 24x24, shift 6.
    model = _model('mixed', False, 12, 'mmdet')
    assert _compare(model, (17, 13), 'mmdet') <= TOL
    model = _model('axial', False, 12, 'original')                     # 13 > 12: no rule change
    assert _compare(model, (17, 13), 'original') <= TOL


def test_rules_differ_only_on_small_grids():
    mmdet, original = _model('mixed', False, 4, 'mmdet'), _model('mixed', False, 4, 'original')
    x = torch.randn(1, 8 * 8, C, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(mmdet.stages[0](x, (8, 8))[2], original.stages[0](x, (8, 8))[2])
        small = torch.randn(1, 4 * 6, C, dtype=torch.float64)
        diff = (mmdet.stages[0](small, (4, 6))[2] - original.stages[0](small, (4, 6))[2]).abs().max().item()
    assert diff > 1e-3
