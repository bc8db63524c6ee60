"""SimpleFPN: strides 4/8/16/32 (+ extra levels) from one stride-16 map, channels, odd sizes,
the mm config interface (mmdet ViTDet arguments) and bad arguments."""
import pytest
import torch

import ropevit.mm  # noqa: F401  (registers SimpleFPN, RoPEViT)
from mmengine.registry import MODELS
from ropevit.necks.simple_fpn import SimpleFPN


def test_strides_and_channels():
    neck = SimpleFPN(64, 32)
    outs = neck(torch.randn(2, 64, 14, 20))       # stride 16 map of a 224x320 image
    assert [tuple(o.shape) for o in outs] == [(2, 32, 56, 80), (2, 32, 28, 40), (2, 32, 14, 20), (2, 32, 7, 10)]


def test_extra_levels_and_odd_sizes():
    neck = SimpleFPN(64, 16, num_outs=5)
    outs = neck([torch.randn(1, 64, 13, 21)])      # ceil(200/16) x ceil(333/16)
    assert [o.shape[-2:] for o in outs] == [(52, 84), (26, 42), (13, 21), (7, 11), (4, 6)]
    assert all(o.shape[1] == 16 for o in outs)


def test_gradients_reach_every_branch():
    neck = SimpleFPN(32, 8)
    x = torch.randn(1, 32, 6, 6, requires_grad=True)
    sum(o.pow(2).mean() for o in neck(x)).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_subset_of_scales():
    neck = SimpleFPN(64, 32, scale_factors=(2.0, 1.0, 0.5))
    assert [o.shape[-1] for o in neck(torch.randn(1, 64, 8, 8))] == [16, 8, 4]


@pytest.mark.parametrize('kw,match', [
    (dict(scale_factors=(3.0,)), 'scale_factors'),
    (dict(scale_factors=()), 'scale_factors'),
    (dict(num_outs=2), 'num_outs'),
    (dict(in_channels=30), 'in_channels'),
])
def test_bad_arguments(kw, match):
    kw = dict(dict(in_channels=64, out_channels=32), **kw)
    with pytest.raises(ValueError, match=match):
        SimpleFPN(**kw)


def test_mm_build_with_mmdet_vitdet_arguments_after_ropevit():
    backbone = MODELS.build(dict(type='RoPEViT', arch=dict(embed_dims=64, num_heads=2, depth=2),
                                 with_cls_token=False, window_size=4, global_attn_indexes=(1,)))
    neck = MODELS.build(dict(type='SimpleFPN', backbone_channel=64, in_channels=[16, 32, 64, 64],
                             out_channels=32, num_outs=5, norm_cfg=dict(type='LN2d', eps=1e-6)))
    backbone.init_weights()
    neck.init_weights()
    outs = neck(backbone(torch.randn(1, 3, 100, 130)))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 28, 36), (1, 32, 14, 18), (1, 32, 7, 9),
                                              (1, 32, 4, 5), (1, 32, 2, 3)]
    bn = MODELS.build(dict(type='SimpleFPN', in_channels=64, out_channels=8, norm_cfg=dict(type='BN')))
    assert isinstance(bn.lateral_convs[0][1], torch.nn.BatchNorm2d)
    with pytest.raises(ValueError, match='in_channels'):
        MODELS.build(dict(type='SimpleFPN', backbone_channel=64, in_channels=[64, 64, 64, 64], out_channels=8))
