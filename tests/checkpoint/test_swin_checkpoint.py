"""Swin checkpoints into RoPESwin: the original RoPE-Swin / Microsoft layout (built from the
original's key list by ``tests/swin_reference.py``, independently of RoPESwin, and checked
against the float64 reference of the original forward), mmdet detector checkpoints,
ropevit's own, bias-table resizing and the errors for checkpoints that do not fit."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ropevit.mm  # noqa: F401  (registers RoPESwin)
from mmengine.registry import MODELS
from ropevit.checkpoint.common import CheckpointMismatchError
from ropevit.checkpoint.swin import convert_swin_state_dict
from ropevit.layers.patch_merging import PatchMerging
from ropevit.models.swin import RoPESwin
from swin_reference import original_forward, original_state_dict

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])


def _original(rope: str, *, use_rpb: bool = False, size: int = 64, seed: int = 0) -> dict:
    """A checkpoint of the original RoPE-Swin (Microsoft layout, built from the original's key
    list) for TINY with window 4 at ``size``. At 64: grids 16, 8, 4, 2, so stage 2 is one
    unshifted window and stage 3 a 2x2 one under the original's window rule."""
    return original_state_dict(**TINY, window_size=4, img_size=(size, size), rope=rope, use_rpb=use_rpb, seed=seed)


def _matches_original(model: RoPESwin, sd: dict, rope: str, size: int = 64, tol: float = 1e-5) -> bool:
    """Stage maps of ``model`` (its output norms set to identity, float64) vs the original's forward."""
    model = copy.deepcopy(model).double().eval()
    for i in model.out_indices:
        setattr(model, f'norm{i}', nn.Identity())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = model(x.double())
        maps, _ = original_forward(sd, x, depths=TINY['depths'], num_heads=TINY['num_heads'], window_size=4,
                                   rope=rope)
    return max((g - e).abs().max().item() for g, e in zip(got, maps)) <= tol


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


def test_microsoft_layout_mixed_checkpoint_loads_and_matches_original(tmp_path):
    ms = _original('mixed')
    ms_copy = {k: v.clone() for k, v in ms.items()}
    dropped = {}
    sd = convert_swin_state_dict({'model': ms}, RoPESwin(arch=TINY, rope='mixed', window_size=4), dropped=dropped)
    assert all(torch.equal(ms[k], ms_copy[k]) for k in ms)              # pure: input untouched
    assert dropped['head.weight'] == 'classification head'
    assert 'final norm' in dropped['norm.weight']
    assert 'layers.1.blocks.1.attn_mask' in dropped and 'layers.0.blocks.0.attn.rope_t_x' in dropped
    assert torch.equal(sd['stages.2.blocks.1.attn.w_msa.qkv.weight'], ms['layers.2.blocks.1.attn.qkv.weight'])
    loaded = _build(tmp_path, {'model': ms}, arch=TINY, rope='mixed', window_size=4, window_rule='original',
                    drop_path_rate=0.0)
    assert torch.equal(loaded.stages[2].blocks[1].attn.w_msa.rope_freqs, ms['layers.2.blocks.1.attn.rope_freqs'])
    assert _matches_original(loaded, ms, 'mixed')


def test_microsoft_layout_axial_checkpoint(tmp_path):
    ms = _original('axial')                                             # theta 50, as the original's buffer
    native = RoPESwin(arch=TINY, rope='axial', window_size=4)
    dropped = {}
    sd = convert_swin_state_dict(ms, native, dropped=dropped)
    assert not any('rope_freqs' in k for k in sd)
    assert 'fixed axial' in dropped['stages.0.blocks.0.attn.w_msa.rope_freqs']
    loaded = _build(tmp_path, {'model': ms}, arch=TINY, rope='axial', window_size=4, window_rule='original',
                    drop_path_rate=0.0)
    assert _matches_original(loaded, ms, 'axial')
    with pytest.raises(CheckpointMismatchError, match='rope_theta=100'):
        convert_swin_state_dict(ms, RoPESwin(arch=TINY, rope='axial', rope_theta=100.0))
    with pytest.raises(CheckpointMismatchError, match='rope="none"'):
        convert_swin_state_dict(ms, RoPESwin(arch=TINY, rope='none'))


def test_microsoft_layout_plain_swin_with_bias_table(tmp_path):
    # At 128 (grids 32, 16, 8, 4) every stage keeps the window 4, so the original's tables
    # have RoPESwin's size (a smaller original window would have a smaller table).
    ms = _original('none', use_rpb=True, size=128)
    loaded = _build(tmp_path, {'model': ms}, arch=TINY, rope='none', use_rpb=True, window_size=4,
                    window_rule='original', drop_path_rate=0.0)
    assert torch.equal(loaded.stages[1].blocks[0].attn.w_msa.relative_position_bias_table,
                       ms['layers.1.blocks.0.attn.relative_position_bias_table'])
    assert _matches_original(loaded, ms, 'none', size=128)


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
