"""The checkpoint loading policy (docs/LOADING_WEIGHTS.md) through ``init_cfg`` Pretrained:

* axial -> mixed is converted exactly (ViT: against timm's axial RoPE-ViT as the oracle;
  Swin: against the axial RoPESwin the checkpoint came from) and reported;
* every model tensor left at init beyond the documented expected ones, and every unused
  checkpoint tensor, is an error naming the keys, unless init_cfg allows it explicitly
  (``allow_missing`` / ``allow_unexpected`` / ``strict=False``; then a WARNING names them);
* mixed -> axial, a checkpoint of the other family, a plain (no RoPE) checkpoint into a
  RoPE model, and an original-layout Swin checkpoint into the mmdet window rule: refused
  with what to set, or loaded with a WARNING that says what it means.
"""
import logging
import math

import pytest
import timm
import torch

import ropevit.mm  # noqa: F401  (registers RoPEViT, RoPESwin)
from mmengine.logging import MMLogger
from mmengine.registry import MODELS
from ropevit.checkpoint.common import CheckpointMismatchError
from ropevit.models.swin import RoPESwin
from ropevit.models.vit import RoPEViT

VIT = dict(embed_dims=64, num_heads=2, depth=2)
SWIN = dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4], window_size=4, out_indices=(0, 1),
            drop_path_rate=0.0)
EXACT = 'axial frequencies converted to mixed (exact)'


@pytest.fixture
def warnings_log():
    """WARNING records of the MMLogger instance the loader writes to."""
    logger = MMLogger.get_current_instance()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                records.append(record)

    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _text(records) -> str:
    return '\n'.join(r.getMessage() for r in records)


def _timm_vit(name, **kw):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, **kw).eval()
    with torch.no_grad():
        for blk in m.blocks:                    # LayerScale 1e-5 would hide the attention
            blk.gamma_1.uniform_(0.5, 1.0)
            blk.gamma_2.uniform_(0.5, 1.0)
    return m


def _vit(path, **kw):
    init = dict(type='Pretrained', checkpoint=str(path), **kw.pop('init', {}))
    m = MODELS.build(dict(type='RoPEViT', **dict(dict(arch=VIT), **kw), init_cfg=init))
    m.init_weights()
    return m.eval()


def _swin(path, **kw):
    init = dict(type='Pretrained', checkpoint=str(path), **kw.pop('init', {}))
    m = MODELS.build(dict(type='RoPESwin', **dict(SWIN, **kw), init_cfg=init))
    m.init_weights()
    return m.eval()


def _save(tmp_path, sd, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(sd, path)
    return path


def _max_diff_to_timm(ours, ref, size=(224, 224)):
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        a = ours(x)[0].flatten(2).transpose(1, 2)                   # [B, N, C]
        b = ref.forward_features(x)[:, ref.num_prefix_tokens:]       # [B, N, C]
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------- axial -> mixed, ViT
def _axial_reference_freqs(head_dim, theta):
    """fx = [m, 0], fy = [0, m] with m_k = theta ** (-4k / hd) (the paper's axial RoPE)."""
    m = torch.tensor([theta ** (-4.0 * k / head_dim) for k in range(head_dim // 4)])
    return torch.cat([m, torch.zeros_like(m)]), torch.cat([torch.zeros_like(m), m])


def test_timm_axial_vit_into_mixed_model_computes_timm_function(tmp_path, warnings_log):
    ref = _timm_vit('vit_small_patch16_rope_224', embed_dim=64, depth=2, num_heads=2, dynamic_img_size=True)
    m = _vit(_save(tmp_path, ref.state_dict()), rope='mixed')
    assert m.load_report.converted == {'rope.freqs': f'{EXACT}, theta=100'}
    assert EXACT in m.load_report.summary()
    fx, fy = _axial_reference_freqs(32, 100.0)
    assert torch.allclose(m.rope.freqs[0], fx.expand(2, 2, 16), rtol=1e-6, atol=0)
    assert torch.allclose(m.rope.freqs[1], fy.expand(2, 2, 16), rtol=1e-6, atol=0)
    assert m.rope.freqs.requires_grad                      # still learnable: fine-tuning starts from axial
    assert not m.load_report.missing and not m.load_report.unexpected
    assert not warnings_log                                # no APE: unambiguously RoPE-Axial
    for size in [(224, 224), (160, 288)]:
        assert _max_diff_to_timm(m, ref, size) <= 1e-5


def test_issue_case_timm_axial_vit_s_into_default_mixed(tmp_path):
    """The issue's measurement: timm's RoPE-Axial ViT-S port into the default rope='mixed'
    backbone left rope.freqs at random init (1.3e-2 on block-11 features)."""
    ref = _timm_vit('vit_small_patch16_rope_224')
    m = _vit(_save(tmp_path, ref.state_dict()), arch='small', use_ape=False)
    assert m.rope_type == 'mixed' and 'rope.freqs' in m.load_report.converted
    assert _max_diff_to_timm(m, ref) <= 1e-5


def test_axial_ape_checkpoint_is_ambiguous_warns_and_converts(tmp_path, warnings_log):
    ref = _timm_vit('vit_small_patch16_rope_ape_224', embed_dim=64, depth=2, num_heads=2)
    path = _save(tmp_path, ref.state_dict())
    m = _vit(path, rope='mixed', use_ape=True)
    assert 'rope.freqs' in m.load_report.converted
    assert 'RoPE-Axial + APE or a plain ViT' in _text(warnings_log) and 'checkpoint_rope' in _text(warnings_log)
    assert _max_diff_to_timm(m, ref) <= 1e-5
    warnings_log.clear()
    m = _vit(path, rope='mixed', use_ape=True, init=dict(checkpoint_rope='axial'))
    assert not warnings_log and 'rope.freqs' in m.load_report.converted


def test_axial_theta_of_the_checkpoint_is_configurable(tmp_path):
    src = RoPEViT(arch=VIT, rope='axial', rope_theta=30.0).eval()
    path = _save(tmp_path, src.state_dict())
    m = _vit(path, rope='mixed', init=dict(axial_rope_theta=30))
    assert m.load_report.converted['rope.freqs'] == f'{EXACT}, theta=30'
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert (m(x)[0] - src(x)[0]).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match='axial_rope_theta=30.* rope_theta=100'):
        _vit(path, rope='axial', init=dict(axial_rope_theta=30))


# ------------------------------------------------------------------------------- missing / unexpected
def test_missing_tensors_are_an_error_naming_them(tmp_path, warnings_log):
    """A checkpoint with 2 of 3 blocks matches > 50 % of the keys: no longer enough."""
    path = _save(tmp_path, RoPEViT(arch=VIT, rope='axial').state_dict())
    deeper = dict(VIT, depth=3)
    with pytest.raises(CheckpointMismatchError, match=r'random init: blocks\.2\.gamma_1, .*blocks\.2\.mlp\.fc2'
                                                      r'\.bias\. .*allow_missing') as e:
        _vit(path, arch=deeper, rope='axial')
    assert str(path) in str(e.value) and 'blocks.1.' not in str(e.value)
    m = _vit(path, arch=deeper, rope='axial', init=dict(allow_missing=['blocks.2.*']))
    assert {k for k in m.load_report.missing} == {k for k in m.state_dict() if k.startswith('blocks.2.')}
    assert 'stay at their random init (allowed): blocks.2.' in _text(warnings_log)


def test_unexpected_tensors_are_an_error_naming_them(tmp_path, warnings_log):
    path = _save(tmp_path, RoPEViT(arch=dict(VIT, depth=3), rope='axial').state_dict())
    with pytest.raises(CheckpointMismatchError, match=r'no place in the model.*blocks\.2\.attn\.qkv\.weight'):
        _vit(path, rope='axial')
    m = _vit(path, rope='axial', init=dict(strict=False))
    assert 'blocks.2.attn.qkv.weight' in m.load_report.unexpected
    assert 'ignored (allowed): blocks.2.' in _text(warnings_log)


def test_shape_mismatch_stays_an_error_with_strict_false(tmp_path):
    path = _save(tmp_path, RoPEViT(arch=dict(VIT, embed_dims=32), rope='axial').state_dict())
    with pytest.raises(CheckpointMismatchError, match=r'patch_embed\.proj\.weight: checkpoint \(32, 3, 16, 16\)'):
        _vit(path, rope='axial', init=dict(strict=False))


def test_timm_deit3_layout_is_refused_naming_both_sides(tmp_path):
    """timm's DeiT-III names LayerScale ``ls1.gamma``; RoPEViT (naver / timm-eva layout) ``gamma_1``."""
    ref = timm.create_model('deit3_small_patch16_224', pretrained=False, embed_dim=64, depth=2, num_heads=2)
    with pytest.raises(CheckpointMismatchError, match=r'random init: .*blocks\.0\.gamma_1.*no place in the '
                                                      r'model.*blocks\.0\.ls1\.gamma'):
        _vit(_save(tmp_path, ref.state_dict()), rope='axial', use_ape=True)


def test_bad_init_cfg_keys_and_values():
    with pytest.raises(ValueError, match=r"unknown keys \['allow_mising'\]"):
        _vit('unused.pth', init=dict(allow_mising=['x']))
    with pytest.raises(ValueError, match="checkpoint_rope='mixd'"):
        _vit('unused.pth', init=dict(checkpoint_rope='mixd'))
    with pytest.raises(ValueError, match='strict=.no.'):
        _vit('unused.pth', init=dict(strict='no'))


def test_allow_pattern_that_matches_nothing_warns(tmp_path, warnings_log):
    path = _save(tmp_path, RoPEViT(arch=VIT, rope='axial').state_dict())
    _vit(path, rope='axial', init=dict(allow_missing=['blcks.*']))
    assert "allow_missing pattern 'blcks.*' matches no key" in _text(warnings_log)


def test_ape_model_with_a_checkpoint_without_ape_names_pos_embed(tmp_path):
    path = _save(tmp_path, RoPEViT(arch=VIT, rope='mixed').state_dict())
    with pytest.raises(CheckpointMismatchError, match=r'random init: pos_embed.*use_ape=False'):
        _vit(path, rope='mixed', use_ape=True)


# ------------------------------------------------------------------------------- mixed -> axial, plain, family
def test_mixed_into_axial_vit_refused_unless_dropped_explicitly(tmp_path, warnings_log):
    ref = _timm_vit('vit_small_patch16_rope_mixed_224', embed_dim=64, depth=2, num_heads=2)
    path = _save(tmp_path, ref.state_dict())
    with pytest.raises(CheckpointMismatchError, match=r'no place in the model.*rope\.freqs.*rope="mixed"'):
        _vit(path, rope='axial')
    m = _vit(path, rope='axial', init=dict(allow_unexpected=['rope.freqs']))
    assert m.load_report.unexpected == ['rope.freqs']
    text = _text(warnings_log)
    assert 'rope.freqs' in text and 'another function' in text
    assert torch.equal(m.blocks[1].attn.qkv.weight, ref.blocks[1].attn.qkv.weight)


def test_plain_vit_into_rope_model(tmp_path, warnings_log):
    """A ViT without RoPE (APE only): read as RoPE-Axial + APE with a warning, or, stated with
    checkpoint_rope='none', loaded with the mixed frequencies at their init and a warning."""
    plain = RoPEViT(arch=VIT, rope='none', use_ape=True)
    path = _save(tmp_path, plain.state_dict())
    m = _vit(path, rope='mixed', use_ape=True, init=dict(checkpoint_rope='none'))
    assert list(m.load_report.expected_new) == ['rope.freqs'] and not m.load_report.converted
    text = _text(warnings_log)
    assert 'rope.freqs starts at its init' in text and 'plain ViT checkpoint' in text
    for k, v in plain.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_swin_checkpoint_into_vit_and_vit_into_swin_are_refused(tmp_path):
    swin = _save(tmp_path, RoPESwin(**SWIN).state_dict(), 'swin.pth')
    with pytest.raises(CheckpointMismatchError, match=r'swin\.pth: this is a Swin checkpoint.*type="RoPESwin"'):
        _vit(swin)
    vit = _save(tmp_path, _timm_vit('vit_small_patch16_rope_224', embed_dim=64, depth=2,
                                    num_heads=2).state_dict(), 'vit.pth')
    with pytest.raises(CheckpointMismatchError, match=r'vit\.pth: this is a ViT checkpoint.*type="RoPEViT"'):
        _swin(vit, init=dict(strict=False))


# ------------------------------------------------------------------------------- Swin
def _same(a, b, x):
    a.eval()
    b.eval()                                     # (mmdet's Swin.train returns None: not chained)
    with torch.no_grad():
        return max((p - q).abs().max().item() for p, q in zip(a(x), b(x)))


def test_axial_swin_into_mixed_swin_is_exact(tmp_path, warnings_log):
    axial = RoPESwin(**SWIN, rope='axial').eval()                     # theta 50, no frequencies saved
    torch.manual_seed(3)
    with torch.no_grad():
        for p in axial.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = _save(tmp_path, {'state_dict': {'backbone.' + k: v for k, v in axial.state_dict().items()}})
    m = _swin(path, rope='mixed')
    conv = m.load_report.converted
    assert len(conv) == 4 and all(why == f'{EXACT}, theta=50' for why in conv.values())
    assert not m.load_report.missing and not warnings_log
    for x in (torch.randn(1, 3, 64, 48), torch.randn(1, 3, 61, 93)):
        assert _same(m, axial, x) <= 1e-5


def _original_axial_buffers(model: RoPESwin, theta: float) -> dict:
    """naver-ai/rope-vit's fixed axial ``rope_freqs`` buffer: its mixed init at angle 0,
    [2, nh, hd/2]: fx = [m cos 0, m cos(pi/2)], fy = [m sin 0, m sin(pi/2)] in float32."""
    out = {}
    for s, stage in enumerate(model.stages):
        for j, blk in enumerate(stage.blocks):
            nh, hd = blk.attn.w_msa.num_heads, blk.attn.w_msa.head_dim
            mag = 1 / theta ** (torch.arange(0, hd, 4)[: hd // 4].float() / hd)
            zero, right = torch.zeros(1), torch.full((1,), torch.pi / 2)
            fx = torch.cat([mag * torch.cos(zero), mag * torch.cos(right)])
            fy = torch.cat([mag * torch.sin(zero), mag * torch.sin(right)])
            out[f'stages.{s}.blocks.{j}.attn.w_msa.rope_freqs'] = torch.stack([fx, fy])[:, None].repeat(1, nh, 1)
    return out


def test_original_axial_buffer_into_mixed_swin_is_exact(tmp_path):
    axial = RoPESwin(**SWIN, rope='axial').eval()
    sd = dict(axial.state_dict(), **_original_axial_buffers(axial, 50.0))
    m = _swin(_save(tmp_path, sd), rope='mixed')
    assert len(m.load_report.converted) == 4 and EXACT in m.load_report.summary()
    assert _same(m, axial, torch.randn(1, 3, 64, 48)) <= 1e-5
    with pytest.raises(CheckpointMismatchError, match='axial RoPE with theta 50.*build the model with rope_theta=50'):
        _swin(_save(tmp_path, sd), rope='axial', rope_theta=100.0)


def test_mixed_into_axial_swin_refused_unless_dropped_explicitly(tmp_path, warnings_log):
    path = _save(tmp_path, RoPESwin(**SWIN, rope='mixed').state_dict())
    with pytest.raises(CheckpointMismatchError, match=r'stages\.0\.blocks\.0\.attn\.w_msa\.rope_freqs.*rope="mixed"'):
        _swin(path, rope='axial')
    m = _swin(path, rope='axial', init=dict(allow_unexpected=['*.rope_freqs']))
    assert len(m.load_report.unexpected) == 4 and 'another function' in _text(warnings_log)


def _mmdet_swin():
    from mmdet.models.backbones.swin import SwinTransformer
    torch.manual_seed(4)
    ref = SwinTransformer(embed_dims=32, depths=[2, 2], num_heads=[2, 4], window_size=4, strides=(4, 2),
                          out_indices=(0, 1), drop_path_rate=0.0)
    ref.init_weights()
    ref.eval()                                   # mmdet's train() returns None
    return ref


def test_plain_swin_into_rope_swin(tmp_path, warnings_log):
    """mmdet's own (plain) Swin: refused by a RoPE model without RPB, naming the bias tables;
    with use_rpb=True and checkpoint_rope='none' loaded, RoPE frequencies at init, warned."""
    ref = _mmdet_swin()
    warnings_log.clear()                         # mmdet's own "no pre-trained weights"
    path = _save(tmp_path, {'state_dict': {'backbone.' + k: v for k, v in ref.state_dict().items()}})
    with pytest.raises(CheckpointMismatchError, match=r'stages\.0\.blocks\.0\.attn\.w_msa\.relative_position_bias'
                                                      r'_table.*use_rpb=True.*checkpoint_rope="none"'):
        _swin(path, rope='mixed')
    m = _swin(path, rope='mixed', use_rpb=True, init=dict(checkpoint_rope='none'))
    assert len(m.load_report.expected_new) == 4 and not m.load_report.converted
    assert 'plain Swin checkpoint' in _text(warnings_log)
    ref_sd = ref.state_dict()
    for k, v in m.state_dict().items():
        if not k.endswith('rope_freqs'):
            assert torch.equal(v, ref_sd[k]), k
    warnings_log.clear()
    m = _swin(path, rope='mixed', use_rpb=True)                         # auto: read as axial + RPB, warned
    assert len(m.load_report.converted) == 4 and 'either a plain Swin' in _text(warnings_log)
    warnings_log.clear()
    m = _swin(path, rope='none', use_rpb=True, mask_padding=False)      # plain into plain: exact, silent
    assert not warnings_log and not m.load_report.missing
    assert _same(m, ref, torch.randn(1, 3, 45, 70)) <= 1e-5


def test_rpb_model_with_checkpoint_without_rpb_names_the_tables(tmp_path):
    path = _save(tmp_path, RoPESwin(**SWIN, rope='mixed').state_dict())
    with pytest.raises(CheckpointMismatchError, match=r'random init: .*relative_position_bias_table.*use_rpb=False'):
        _swin(path, rope='mixed', use_rpb=True)


def test_output_norms_are_the_expected_new_keys(tmp_path, warnings_log):
    src = RoPESwin(**dict(SWIN, out_indices=(1,)), rope='mixed')
    m = _swin(_save(tmp_path, src.state_dict()), rope='mixed')
    assert set(m.load_report.expected_new) == {'norm0.weight', 'norm0.bias'}
    assert 'norm0.weight' not in _text(warnings_log)                     # expected: INFO, not WARNING


def _microsoft_keys(model: RoPESwin) -> dict:
    """Only the key names of the Microsoft layout (enough to load; values not reordered)."""
    ms = {}
    for k, v in model.state_dict().items():
        if k.startswith('norm'):
            continue
        k = k.replace('patch_embed.projection.', 'patch_embed.proj.').replace('stages.', 'layers.', 1)
        k = k.replace('.attn.w_msa.', '.attn.').replace('.ffn.layers.0.0.', '.mlp.fc1.')
        ms[k.replace('.ffn.layers.1.', '.mlp.fc2.')] = v
    c = model.num_features[-1]
    ms.update({'norm.weight': torch.ones(c), 'norm.bias': torch.zeros(c), 'head.weight': torch.zeros(10, c),
               'head.bias': torch.zeros(10)})
    return {'model': ms}


def test_original_layout_into_mmdet_window_rule_warns(tmp_path, warnings_log):
    path = _save(tmp_path, _microsoft_keys(RoPESwin(**SWIN, rope='mixed')))
    m = _swin(path, rope='mixed')
    assert m.window_rule == 'mmdet' and 'window_rule="original"' in _text(warnings_log)
    assert {k.split('.')[0] for k in m.load_report.expected_new} == {'norm0', 'norm1'}
    warnings_log.clear()
    _swin(path, rope='mixed', window_rule='original')
    assert not warnings_log
    mmdet_layout = _save(tmp_path, RoPESwin(**SWIN, rope='mixed').state_dict(), 'mmdet.pth')
    _swin(mmdet_layout, rope='mixed')
    assert not warnings_log


def test_axial_frequency_formula_matches_the_theta_read_back():
    """The theta read from an original axial buffer is the one it was built with (not only 50)."""
    from ropevit.checkpoint.common import infer_axial_theta
    m = RoPESwin(**SWIN, rope='axial')
    for theta in (10.0, 50.0, 100.0, 1e4):
        buf = _original_axial_buffers(m, theta)['stages.1.blocks.1.attn.w_msa.rope_freqs']
        assert math.isclose(infer_axial_theta(buf, default=0.0), theta, rel_tol=1e-4)
    mixed = RoPESwin(**SWIN, rope='mixed').stages[1].blocks[1].attn.w_msa.rope_freqs.detach()
    assert infer_axial_theta(mixed, default=0.0) is None
