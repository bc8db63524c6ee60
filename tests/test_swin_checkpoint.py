"""Swin checkpoints into RoPESwin: the original RoPE-Swin / Microsoft layout (built here from
the published key layout), mmdet detector checkpoints, ropevit's own, bias-table resizing
and the errors for checkpoints that do not fit."""
import math

import pytest
import torch
import torch.nn.functional as F

import ropevit.mm  # noqa: F401  (registers RoPESwin)
from mmengine.registry import MODELS
from ropevit.checkpoint.common import CheckpointMismatchError
from ropevit.checkpoint.swin import convert_swin_state_dict
from ropevit.layers.swin_attention import relative_position_index
from ropevit.layers.swin_block import PatchMerging
from ropevit.models.swin import RoPESwin

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])


def _ms_order(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Our channel-major ``C x [(0,0),(0,1),(1,0),(1,1)]`` -> Microsoft's
    ``[(0,0),(1,0),(0,1),(1,1)] x C`` along ``dim``."""
    shape = w.shape
    c = shape[dim] // 4
    w = w.unflatten(dim, (c, 4)).index_select(dim + 1, torch.tensor([0, 2, 1, 3]))
    return w.transpose(dim, dim + 1).reshape(shape)


def _to_microsoft(model: RoPESwin, *, axial_theta=None) -> dict:
    """A checkpoint in the original RoPE-Swin (Microsoft Swin) layout, from the issue's key list."""
    ms = {}
    ws = model.window_size
    for k, v in model.state_dict().items():
        k = k.replace('patch_embed.projection.', 'patch_embed.proj.')
        if k.startswith('norm'):
            continue                                                     # detection-only output norms
        k = k.replace('stages.', 'layers.', 1).replace('.attn.w_msa.', '.attn.')
        k = k.replace('.ffn.layers.0.0.', '.mlp.fc1.').replace('.ffn.layers.1.', '.mlp.fc2.')
        if k.endswith('downsample.reduction.weight'):
            v = _ms_order(v, 1)
        elif '.downsample.norm.' in k:
            v = _ms_order(v, 0)
        ms[k] = v.clone()
    t = torch.arange(ws * ws, dtype=torch.float32)
    for i, stage in enumerate(model.stages):
        nh, hd = stage.blocks[0].attn.w_msa.num_heads, stage.blocks[0].attn.w_msa.head_dim
        for j, _ in enumerate(stage.blocks):
            p = f'layers.{i}.blocks.{j}.'
            ms[p + 'attn.rope_t_x'], ms[p + 'attn.rope_t_y'] = t % ws, torch.div(t, ws, rounding_mode='floor')
            ms[p + 'attn.relative_position_index'] = relative_position_index(ws)
            if j % 2:
                ms[p + 'attn_mask'] = torch.zeros(4, ws * ws, ws * ws)
            if axial_theta is not None:                                  # original: buffer, angle 0
                mag = 1 / axial_theta ** (torch.arange(0, hd, 4)[: hd // 4].float() / hd)
                fx = torch.cat([mag * math.cos(0), mag * math.cos(math.pi / 2)])
                fy = torch.cat([mag * math.sin(0), mag * math.sin(math.pi / 2)])
                ms[p + 'attn.rope_freqs'] = torch.stack([fx, fy])[:, None].repeat(1, nh, 1)
    c = model.num_features[-1]
    ms.update({'norm.weight': torch.ones(c), 'norm.bias': torch.zeros(c),
               'head.weight': torch.randn(10, c), 'head.bias': torch.zeros(10)})
    return ms


def _build(tmp_path, ckpt, **kw) -> RoPESwin:
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    m = MODELS.build(dict(type='RoPESwin', init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kw))
    m.init_weights()
    return m.eval()


def _same_outputs(a, b, x, tol=1e-6):
    with torch.no_grad():
        return all((p - q).abs().max().item() <= tol for p, q in zip(a.eval()(x), b.eval()(x)))


def test_patch_merging_reorder_matches_microsoft_definition():
    c = 8
    ms_norm_w, ms_norm_b, ms_red = torch.randn(4 * c), torch.randn(4 * c), torch.randn(2 * c, 4 * c)
    x = torch.randn(2, 6, 10, c)
    # Microsoft's PatchMerging: concatenate the 2x2 neighbours, norm, reduce.
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    expected = F.linear(F.layer_norm(cat, (4 * c,), ms_norm_w, ms_norm_b), ms_red).flatten(1, 2)
    sd = convert_swin_state_dict({'layers.0.downsample.norm.weight': ms_norm_w,
                                  'layers.0.downsample.norm.bias': ms_norm_b,
                                  'layers.0.downsample.reduction.weight': ms_red})
    pm = PatchMerging(c, 2 * c)
    pm.load_state_dict({k.split('downsample.')[1]: v for k, v in sd.items()})
    got, hw = pm(x.flatten(1, 2), (6, 10))
    assert hw == (3, 5) and (got - expected).abs().max().item() < 1e-5


def test_microsoft_layout_mixed_checkpoint_loads_and_matches_native(tmp_path):
    native = RoPESwin(arch=TINY, rope='mixed').eval()
    ms = _to_microsoft(native)
    ms_copy = {k: v.clone() for k, v in ms.items()}
    dropped = {}
    convert_swin_state_dict({'model': ms}, native, dropped=dropped)
    assert all(torch.equal(ms[k], ms_copy[k]) for k in ms)              # pure: input untouched
    assert dropped['head.weight'] == 'classification head'
    assert 'layers.1.blocks.1.attn_mask' in dropped and 'layers.0.blocks.0.attn.rope_t_x' in dropped
    loaded = _build(tmp_path, {'model': ms}, arch=TINY, rope='mixed')
    assert torch.equal(loaded.stages[2].blocks[1].attn.w_msa.rope_freqs,
                       native.stages[2].blocks[1].attn.w_msa.rope_freqs)
    assert _same_outputs(loaded, native, torch.randn(1, 3, 75, 61))


def test_microsoft_layout_axial_checkpoint(tmp_path):
    native = RoPESwin(arch=TINY, rope='axial').eval()                   # theta 50
    ms = _to_microsoft(native, axial_theta=50.0)
    dropped = {}
    sd = convert_swin_state_dict(ms, native, dropped=dropped)
    assert not any('rope_freqs' in k for k in sd)
    assert 'fixed axial' in dropped['stages.0.blocks.0.attn.w_msa.rope_freqs']
    assert _same_outputs(_build(tmp_path, {'model': ms}, arch=TINY, rope='axial'), native, torch.randn(1, 3, 64, 48))
    with pytest.raises(CheckpointMismatchError, match='rope_theta=100'):
        convert_swin_state_dict(ms, RoPESwin(arch=TINY, rope='axial', rope_theta=100.0))
    with pytest.raises(CheckpointMismatchError, match='rope="none"'):
        convert_swin_state_dict(ms, RoPESwin(arch=TINY, rope='none'))


def test_mmdet_detector_checkpoint_matches_mmdet(tmp_path):
    from mmdet.models.backbones.swin import SwinTransformer
    ref = SwinTransformer(**TINY, drop_path_rate=0.0)
    ref.init_weights()
    ref.eval()
    ckpt = {'state_dict': {**{'backbone.' + k: v for k, v in ref.state_dict().items()},
                           'neck.lateral_convs.0.conv.weight': torch.zeros(1)}, 'meta': {}}
    dropped = {}
    convert_swin_state_dict(ckpt, dropped=dropped)
    assert dropped['neck.*'] == 'not part of the backbone'
    ours = _build(tmp_path, ckpt, **TINY, rope='none', use_rpb=True, mask_padding=False, drop_path_rate=0.0)
    x = torch.randn(1, 3, 113, 177)
    with torch.no_grad():
        assert max((a - b).abs().max().item() for a, b in zip(ref(x), ours(x))) <= 1e-5


def test_ropevit_checkpoint_round_trip(tmp_path):
    native = RoPESwin(arch=TINY, rope='mixed', out_indices=(1, 2)).eval()
    ckpt = {'state_dict': {'backbone.' + k: v for k, v in native.state_dict().items()}}
    loaded = _build(tmp_path, ckpt, arch=TINY, rope='mixed', out_indices=(1, 2))
    assert _same_outputs(loaded, native, torch.randn(2, 3, 50, 70))


def test_bias_table_resized_bicubic_for_other_window(tmp_path):
    src = RoPESwin(arch=TINY, rope='none', window_size=7)
    for n, p in src.named_parameters():
        if n.endswith('relative_position_bias_table'):
            p.data.normal_()
    sd = src.state_dict()
    target = RoPESwin(arch=TINY, rope='none', window_size=12)
    out = convert_swin_state_dict(sd, target)
    key = 'stages.2.blocks.1.attn.w_msa.relative_position_bias_table'
    table = sd[key]                                                      # [13*13, 4]
    ref = F.interpolate(table.t().reshape(1, 4, 13, 13), size=(23, 23), mode='bicubic', align_corners=False)
    assert out[key].shape == (23 * 23, 4)
    assert torch.allclose(out[key], ref.reshape(4, -1).t())
    assert torch.equal(convert_swin_state_dict(sd, src)[key], table)    # same window: untouched
    m = _build(tmp_path, sd, arch=TINY, rope='none', window_size=12)
    with torch.no_grad():
        assert [o.shape[-1] for o in m(torch.randn(1, 3, 97, 131))] == [33, 17, 9, 5]


def test_checkpoint_that_does_not_fit_names_keys(tmp_path):
    vit_like = {'blocks.0.attn.qkv.weight': torch.zeros(96, 32), 'cls_token': torch.zeros(1, 1, 32)}
    with pytest.raises(CheckpointMismatchError, match='cls_token'):
        _build(tmp_path, {'model': vit_like}, arch=TINY)
    wrong_size = RoPESwin(arch=dict(embed_dims=64, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16])).state_dict()
    with pytest.raises(CheckpointMismatchError, match='patch_embed.projection.weight'):
        _build(tmp_path, wrong_size, arch=TINY)


def test_mm_options_translated_and_checked():
    m = MODELS.build(dict(type='RoPESwin', arch='tiny', norm_cfg=dict(type='LN', eps=1e-6), act_cfg=dict(type='GELU'),
                          convert_weights=True, pretrain_img_size=224, strides=(4, 2, 2, 2), with_cp=False))
    assert m.norm0.eps == 1e-6 and set(m.state_dict()) == set(RoPESwin(arch='tiny').state_dict())
    with pytest.raises(ValueError, match='use_abs_pos_embed'):
        MODELS.build(dict(type='RoPESwin', arch=TINY, use_abs_pos_embed=True))
    with pytest.raises(ValueError, match='strides'):
        MODELS.build(dict(type='RoPESwin', arch=TINY, strides=(4, 2, 2, 1)))
