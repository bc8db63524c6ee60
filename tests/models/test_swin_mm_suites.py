"""mmdet's and mmseg's own SwinTransformer test cases (tests/test_models/test_backbones/test_swin.py in
both repositories), run against RoPESwin as a drop-in replacement.

Where they check shapes, frozen stages and activation checkpointing, RoPESwin is compared with
their SwinTransformer itself (same keywords, same input). Where they expect an error, RoPESwin
must raise one that names the value (a TypeError / ValueError; theirs are asserts). The one
documented divergence: ``use_abs_pos_embed=True`` is refused (RoPE-Swin has no absolute position
embedding).
"""
from __future__ import annotations

import pytest
import torch

import ropevit.mm  # noqa: F401
from ropevit.mm.swin import RoPESwin


def _mmdet_swin(**kwargs):
    from mmdet.models.backbones.swin import SwinTransformer
    return SwinTransformer(**kwargs)


def _mmseg_swin(**kwargs):
    from mmseg.models.backbones import SwinTransformer
    return SwinTransformer(**kwargs)


REFERENCES = {'mmdet': _mmdet_swin, 'mmseg': _mmseg_swin}
TINY = dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize('kwargs, error, match', [
    (dict(pretrained=123), TypeError, r'pretrained=123 must be a checkpoint path \(str\) or None'),
    (dict(pretrained=['a.pth']), TypeError, r"pretrained=\['a.pth'\]"),
    (dict(strides=(2, 2, 2, 2), patch_size=4), ValueError,
     r'strides=\(2, 2, 2, 2\) is not supported; allowed: \(4, 2, 2, 2\)'),
    (dict(strides=(4, 2, 1, 2)), ValueError, r'strides=\(4, 2, 1, 2\)'),
    (dict(strides=(4, 2)), ValueError, r'one per stage'),
    (dict(pretrain_img_size=(224, 224, 224)), ValueError,
     r'pretrain_img_size=\(224, 224, 224\) must be a positive int or a tuple of 1 or 2'),
    (dict(pretrain_img_size=0), ValueError, r'pretrain_img_size=0'),
    (dict(pretrain_img_size='224'), ValueError, r"pretrain_img_size='224'"),
    (dict(init_cfg=dict(type='Pretrained', checkpoint='a.pth'), pretrained='b.pth'), ValueError,
     r'cannot both be set'),
    (dict(init_cfg='a.pth'), TypeError, r"init_cfg='a.pth' must be None, a dict or a list of dicts"),
    (dict(use_abs_pos_embed=True), ValueError, r'use_abs_pos_embed=True is not supported'),
    (dict(convert_weights='yes'), TypeError, r"convert_weights='yes' must be a bool"),
    (dict(norm_cfg='LN'), TypeError, r"norm_cfg='LN' must be None or a dict with a \"type\" key"),
    (dict(act_cfg=dict(inplace=True)), TypeError, r'act_cfg=\{.inplace.: True\}'),
])
def test_bad_keywords_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        RoPESwin(**TINY, **kwargs)


@pytest.mark.parametrize('suite', sorted(REFERENCES))
def test_their_bad_inputs_are_refused_by_them_too(suite):
    """The cases above that come from the suites are errors in the references as well (so the
    keywords mean the same thing)."""
    build = REFERENCES[suite]
    with pytest.raises(TypeError):
        build(pretrained=123)
    with pytest.raises(AssertionError):
        build(strides=(2, 2, 2, 2), patch_size=4)
    with pytest.raises(AssertionError):
        build(pretrain_img_size=(224, 224, 224))


def test_keywords_their_suites_accept():
    for size in (224, (224,), (224, 224), [224, 224]):
        RoPESwin(**TINY, pretrain_img_size=size)
    RoPESwin(**TINY, strides=(4, 2, 2, 2), convert_weights=False, norm_cfg=dict(type='LN'),
             act_cfg=dict(type='GELU'), use_abs_pos_embed=False)
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        model = RoPESwin(**TINY, pretrained='some/weights.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='some/weights.pth')


# ------------------------------------------------------------------------------ shapes
def _shapes(model, h, w):
    model.eval()                               # (mmdet's train() returns None, so no chaining)
    with torch.no_grad():
        return [tuple(o.shape) for o in model(torch.randn(1, 3, h, w))]


@pytest.mark.timeout(120)
def test_default_swin_t_shapes_at_their_sizes():
    """Their cases: Swin-T at 512x512, 511x511 and 112x137, and patch_norm=False at 224. The two
    large inputs run on Swin-T's widths with one block per stage (shapes depend on the strides
    and widths only; this keeps the test fast)."""
    expected = [(1, 96, 128, 128), (1, 192, 64, 64), (1, 384, 32, 32), (1, 768, 16, 16)]
    shallow = RoPESwin(depths=(1, 1, 1, 1))
    for h, w in ((512, 512), (511, 511)):
        assert _shapes(shallow, h, w) == expected
    assert _shapes(RoPESwin(), 112, 137) == _shapes(_mmdet_swin(), 112, 137) == \
        [(1, 96, 28, 35), (1, 192, 14, 18), (1, 384, 7, 9), (1, 768, 4, 5)]
    assert _shapes(RoPESwin(patch_norm=False), 224, 224) == _shapes(_mmseg_swin(patch_norm=False), 224, 224)


@pytest.mark.parametrize('suite', sorted(REFERENCES))
@pytest.mark.parametrize('hw', [(64, 64), (63, 63), (28, 35), (97, 50)])
def test_shapes_equal_the_references_on_odd_sizes(suite, hw):
    kwargs = dict(**TINY, window_size=4, out_indices=(0, 1, 2, 3))
    assert _shapes(RoPESwin(**kwargs), *hw) == _shapes(REFERENCES[suite](**kwargs), *hw)


# ------------------------------------------------------------------------------ frozen stages
@pytest.mark.parametrize('suite', sorted(REFERENCES))
@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 4])
def test_frozen_stages_freeze_the_parameters_theirs_freeze(suite, frozen):
    """Same state-dict keys, so the frozen names must be theirs (less the tensors Swin has and
    RoPE-Swin has not: relative position bias tables; plus RoPE-Swin's own rope_freqs)."""
    ours = RoPESwin(**TINY, frozen_stages=frozen, rope='mixed')
    theirs = REFERENCES[suite](**TINY, frozen_stages=frozen)
    ours.train()
    theirs.train()
    frozen_ours = {n for n, p in ours.named_parameters() if not p.requires_grad}
    frozen_theirs = {n for n, p in theirs.named_parameters() if not p.requires_grad}
    assert {n for n in frozen_ours if not n.endswith('rope_freqs')} == \
        {n for n in frozen_theirs if not n.endswith('relative_position_bias_table')}
    if frozen == 4:                                                  # their assert: nothing trains
        assert all(not p.requires_grad for p in ours.parameters())
    eval_ours = {n for n, m in ours.named_modules() if not m.training}
    eval_theirs = {n for n, m in theirs.named_modules() if not m.training}
    assert eval_ours >= {n for n in eval_theirs if n in dict(ours.named_modules())}


# ------------------------------------------------------------------------------ with_cp
def test_with_cp_checkpoints_every_block_and_computes_the_same(monkeypatch):
    """Their case builds with with_cp=True and runs a forward; here the checkpointed model also
    gives the same outputs and gradients as the plain one, and torch's checkpoint is what runs."""
    import torch.utils.checkpoint as cp
    torch.manual_seed(0)
    plain = RoPESwin(**TINY, window_size=4, drop_path_rate=0.0)
    ckpt = RoPESwin(**TINY, window_size=4, drop_path_rate=0.0, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    original = cp.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(cp, 'checkpoint', counting)
    x = torch.randn(2, 3, 45, 61)
    outs = []
    for model in (plain, ckpt):
        model.train()
        feats = model(x)
        sum(f.square().mean() for f in feats).backward()
        outs.append((feats, {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert len(calls) == sum(TINY['depths'])                      # one checkpoint per block, all blocks
    for a, b in zip(outs[0][0], outs[1][0]):
        torch.testing.assert_close(a, b)
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][name], grad, msg=name)
