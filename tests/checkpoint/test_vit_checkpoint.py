"""Checkpoints into RoPEViT: the original naver RoPE-ViT layout (built here from the
documented layout), timm's ports, mmengine ``backbone.``-prefixed checkpoints, the
offline converter, and errors for checkpoints that do not fit."""
import pytest
import timm
import torch

import ropevit.mm  # noqa: F401  (registers RoPEViT)
from mmengine.registry import MODELS
from ropevit.checkpoint.common import CheckpointMismatchError
from ropevit.checkpoint.vit import convert_vit_state_dict
from ropevit.models.vit import RoPEViT

TINY = dict(embed_dims=64, num_heads=2, depth=2)


def _timm(name='vit_small_patch16_rope_mixed_ape_224'):
    torch.manual_seed(2)
    m = timm.create_model(name, pretrained=False, embed_dim=64, depth=2, num_heads=2).eval()
    with torch.no_grad():
        for blk in m.blocks:
            blk.gamma_1.fill_(0.5)
            blk.gamma_2.fill_(0.5)
    return m


def _naver_original(timm_model) -> dict:
    """naver-ai/rope-vit layout: flat ``freqs`` [2, depth, nh * hd / 2], ``freqs_t_x/y`` buffers."""
    sd = {k: v.clone() for k, v in timm_model.state_dict().items()}
    freqs = sd.pop('rope.freqs')                                   # [2, depth, nh, hd/2]
    sd['freqs'] = freqs.reshape(2, freqs.shape[1], -1)             # [2, depth, nh*hd/2]
    ys, xs = torch.meshgrid(torch.arange(14.), torch.arange(14.), indexing='ij')
    sd['freqs_t_x'], sd['freqs_t_y'] = xs.flatten(), ys.flatten()
    return {'model': sd, 'epoch': 399}


def _build(path, **kw):
    m = MODELS.build(dict(type='RoPEViT', arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)),
                          **dict(dict(rope='mixed', use_ape=True), **kw)))
    m.init_weights()
    return m.eval()


def _features_equal(ours, ref, size=(224, 224)):
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        a = ours(x)[0].flatten(2).transpose(1, 2)
        b = ref.forward_features(x)[:, 1:]
    return (a - b).abs().max().item()


def test_naver_original_layout_loads_and_matches(tmp_path):
    ref = _timm()
    ckpt = _naver_original(ref)
    assert ckpt['model']['freqs'].shape == (2, 2, 32)
    torch.save(ckpt, tmp_path / 'naver.pth')
    m = _build(tmp_path / 'naver.pth')
    assert torch.equal(m.rope.freqs, ref.rope.freqs)
    rep = m.load_report
    assert rep.dropped == {'head.weight': 'classification head', 'head.bias': 'classification head',
                           'freqs_t_x': 'recomputed from the grid (not a weight)',
                           'freqs_t_y': 'recomputed from the grid (not a weight)'}
    assert not rep.missing and not rep.unexpected
    assert _features_equal(m, ref) <= 1e-5


def test_timm_axial_port_loads_without_frequencies(tmp_path):
    ref = _timm('vit_small_patch16_rope_224')
    torch.save(ref.state_dict(), tmp_path / 'timm.pth')
    m = _build(tmp_path / 'timm.pth', rope='axial', use_ape=False)
    assert 'rope.freqs' not in m.state_dict()
    assert not m.load_report.missing and not m.load_report.converted
    assert _features_equal(m, ref) <= 1e-5
    # Into the default rope='mixed': the mixed frequencies are set to the axial ones, same function.
    m = _build(tmp_path / 'timm.pth', rope='mixed', use_ape=False)
    assert m.load_report.converted == {'rope.freqs': 'axial frequencies converted to mixed (exact), theta=100'}
    assert not m.load_report.missing
    assert _features_equal(m, ref) <= 1e-5


def test_mmengine_backbone_prefixed_checkpoint(tmp_path):
    src = RoPEViT(arch=TINY, rope='mixed', use_ape=True)
    sd = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    sd.update({'neck.lateral_convs.0.0.weight': torch.zeros(1), 'rpn_head.rpn_cls.weight': torch.zeros(1)})
    torch.save({'meta': {'epoch': 12}, 'state_dict': sd}, tmp_path / 'det.pth')
    m = _build(tmp_path / 'det.pth')
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    assert not m.load_report.unexpected and not m.load_report.missing


def test_window_model_drops_class_token_and_reports_it(tmp_path):
    ref = _timm()
    torch.save(ref.state_dict(), tmp_path / 't.pth')
    m = _build(tmp_path / 't.pth', with_cls_token=False, window_size=7, global_attn_indexes=(1,))
    assert m.load_report.dropped['cls_token'] == 'model has with_cls_token=False'
    assert torch.equal(m.blocks[1].attn.qkv.weight, ref.blocks[1].attn.qkv.weight)


def test_pos_embed_is_resized_to_the_pretrain_grid():
    ref = _timm()
    m = RoPEViT(arch=TINY, rope='mixed', use_ape=True, pretrain_img_size=384)
    out = convert_vit_state_dict(ref.state_dict(), m)
    assert out['pos_embed'].shape == (1, 576, 64)
    from timm.layers import resample_abs_pos_embed
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), (24, 24), (14, 14), num_prefix_tokens=0)
    torch.testing.assert_close(out['pos_embed'], expected)


def test_converter_is_pure_and_infers_heads():
    ckpt = _naver_original(_timm())
    before = {k: v.clone() for k, v in ckpt['model'].items()}
    out = convert_vit_state_dict(ckpt, num_heads=2)
    assert out['rope.freqs'].shape == (2, 2, 2, 16)
    assert all(torch.equal(ckpt['model'][k], v) for k, v in before.items())


@pytest.mark.parametrize('case,match', [
    ('unrelated', r'random init: cls_token, pos_embed, patch_embed\.proj\.weight.*no place in the model and would be ignored: encoder\.layer\.0\.weight, '
                  r'classifier\.bias.*nothing fits'),
    ('shape', 'blocks.0.attn.qkv.weight'),
    ('mixed_into_axial', 'rope="mixed"'),
    ('ape_into_no_ape', 'use_ape=True'),
])
def test_mismatched_checkpoints_are_errors_naming_keys(tmp_path, case, match):
    kw = {}
    if case == 'unrelated':
        sd = {'encoder.layer.0.weight': torch.zeros(3), 'classifier.bias': torch.zeros(2)}
    elif case == 'shape':
        sd = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), rope='mixed', use_ape=True).state_dict()
    elif case == 'mixed_into_axial':
        sd, kw = _timm().state_dict(), dict(rope='axial')
    else:
        sd, kw = _timm().state_dict(), dict(use_ape=False)
    torch.save(sd, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointMismatchError, match=match):
        _build(tmp_path / 'bad.pth', **kw)


def test_convert_checkpoint_cli(tmp_path):
    from tools.convert_checkpoint import main
    ref = _timm()
    torch.save(_naver_original(ref), tmp_path / 'naver.pth')
    # Checked against a model built from --arch (JSON for a non-preset shape); heads come from it.
    assert main(['--model', 'vit', str(tmp_path / 'naver.pth'), str(tmp_path / 'chk.pth'),
                 '--arch', '{"embed_dims": 64, "num_heads": 2, "depth": 2}', '--rope', 'mixed', '--use-ape']) == 0
    with pytest.raises(CheckpointMismatchError, match='rope="mixed"'):
        main(['--model', 'vit', str(tmp_path / 'naver.pth'), str(tmp_path / 'chk.pth'),
              '--arch', '{"embed_dims": 64, "num_heads": 2, "depth": 2}', '--rope', 'axial', '--use-ape'])
    assert main(['--model', 'vit', str(tmp_path / 'naver.pth'), str(tmp_path / 'out.pth'), '--num-heads', '2']) == 0
    out = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    m = RoPEViT(arch=TINY, rope='mixed', use_ape=True)
    m.load_state_dict(out, strict=True)
    assert torch.equal(m.rope.freqs, ref.rope.freqs)
