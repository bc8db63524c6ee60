"""RoPEViT as EVA-02 (timm's ``eva02_base_patch14_*``): SwiGLU MLP with sub-LN, split q/k/v, APE with
a class slot, RoPE on the pretraining-grid rescale (``rope_coords='interpolate'``). Oracle: timm's
own model with the same random weights, globally and with its attention run on the same windows."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ropevit.checkpoint.vit import convert_vit_state_dict, yx_to_xy_pairs
from ropevit.models.vit import RoPEViT

ARCH = dict(embed_dims=64, num_heads=2, depth=2, mlp_ratio=4 * 2 / 3)


def _timm_eva02() -> nn.Module:
    torch.manual_seed(0)
    ref = timm.create_model('eva02_base_patch14_224', pretrained=False, embed_dim=64, depth=2, num_heads=2,
                            dynamic_img_size=True).eval()
    with torch.no_grad():                      # init std 0.02 would hide RoPE and APE errors
        for n, p in ref.named_parameters():
            if n.endswith(('q_proj.weight', 'k_proj.weight')):
                p.mul_(10)
            elif n in ('cls_token', 'pos_embed'):
                p.normal_()
    return ref


def _ours(ref: nn.Module, **kw) -> RoPEViT:
    ours = RoPEViT(arch=ARCH, patch_size=14, pretrain_img_size=224, rope='axial', rope_theta=10000,
                   rope_coords='interpolate', use_ape=True, with_cls_token=True, layer_scale_init_value=None,
                   final_norm=False, mlp_layer='swiglu', mlp_norm=True, **kw).eval()
    sd = convert_vit_state_dict(ref.state_dict(), ours)
    missing, unexpected = ours.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    return ours


def test_yx_permutation_swaps_the_axis_halves_of_the_pairs():
    perm = yx_to_xy_pairs(16)
    assert sorted(perm.tolist()) == list(range(16))
    assert perm[:4].tolist() == [8, 9, 10, 11] and perm[8:10].tolist() == [0, 1]


@pytest.mark.parametrize('size', [(224, 224), (280, 168), (154, 266)])
def test_parity_with_timm_eva02_at_several_sizes(size):
    ref = _timm_eva02()
    ours = _ours(ref)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, 1:]                           # no final norm (fc_norm pools)
        (out,) = ours(x)
    assert out.shape == (2, 64, size[0] // 14, size[1] // 14)
    assert (out.flatten(2).transpose(1, 2) - expected).abs().max().item() <= 1e-5


def _windowed_reference(ref: nn.Module, x: torch.Tensor, ws: int, windowed: set[int]) -> torch.Tensor:
    """timm's EVA-02 with the attention of ``windowed`` blocks run on windows (each window with the
    class token; the class token attends globally); RoPE rows of the whole grid."""
    B, _, Hi, Wi = x.shape
    H, W = Hi // 14, Wi // 14
    tok, rope = ref._pos_embed(ref.patch_embed(x))
    for i, blk in enumerate(ref.blocks):
        if i not in windowed:
            tok = blk(tok, rope=rope)
            continue
        y = blk.norm1(tok)
        out = torch.empty_like(y)
        out[:, :1] = blk.attn(y, rope=rope)[:, :1]
        for r0 in range(0, H, ws):
            for c0 in range(0, W, ws):
                idx = torch.tensor([r * W + c for r in range(r0, min(r0 + ws, H)) for c in range(c0, min(c0 + ws, W))])
                out[:, 1 + idx] = blk.attn(torch.cat([y[:, :1], y[:, 1 + idx]], 1), rope=rope[idx])[:, 1:]
        tok = tok + out
        tok = tok + blk.mlp(blk.norm2(tok))
    return tok[:, 1:]


@pytest.mark.parametrize('size,ws', [((224, 224), 5), ((280, 168), 4), ((154, 266), 6)])
def test_windowed_parity_with_timm_eva02_run_on_the_same_windows(size, ws):
    ref = _timm_eva02()
    ours = _ours(ref, window_size=ws, global_attn_indexes=(1,))
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        err = (ours(x)[0].flatten(2).transpose(1, 2) - _windowed_reference(ref, x, ws, {0})).abs().max().item()
    assert err <= 1e-5
