"""RoPEViT as EVA-02 (timm's ``eva02_base_patch14_*``): SwiGLU MLP with sub-LN, split q/k/v, APE with
a class slot, RoPE on the pretraining-grid rescale (``rope_coords='interpolate'``). Oracle: timm's
own model with the same random weights, globally and with its attention run on the same windows."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ropevit.checkpoint.common import ConversionLog
from ropevit.checkpoint.vit import convert_vit_state_dict, yx_to_xy_pairs
from ropevit.layers.patch_embed import resample_patch_kernel
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


def _upsample_each_patch(x: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """``[B, C, h*p, w*p]`` -> ``[B, C, h*q, w*q]``: every ``p x p`` patch bicubic-resized on its own to ``q x q``."""
    B, C, H, W = x.shape
    h, w = H // p, W // p
    patches = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(B * h * w, C, p, p)
    up = F.interpolate(patches, size=(q, q), mode='bicubic', align_corners=False)
    return up.reshape(B, h, w, C, q, q).permute(0, 3, 1, 4, 2, 5).reshape(B, C, h * q, w * q)


def test_resized_patch_kernel_embeds_a_patch_as_its_bicubic_upsampling():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 14, 14, dtype=torch.float64)
    x = torch.randn(5, 3, 14, 14, dtype=torch.float64)
    w16 = resample_patch_kernel(w, (16, 16))
    up = F.interpolate(x, size=(16, 16), mode='bicubic', align_corners=False)
    assert w16.shape == (8, 3, 16, 16)
    torch.testing.assert_close(F.conv2d(up, w16), F.conv2d(x, w), rtol=0, atol=1e-9)
    # the naive alternative (resizing the kernel like an image) does not have this property
    naive = F.interpolate(w, size=(16, 16), mode='bicubic', align_corners=False) * (14 / 16) ** 2
    assert (F.conv2d(up, naive) - F.conv2d(x, w)).abs().max() > 1e-2


@pytest.mark.parametrize('size', [(224, 224), (280, 168)])
def test_eva02_weights_at_patch_16_compute_timm_on_the_patch_upsampled_image(size):
    """The detection / segmentation configs' EVA-02: patch 16, pretraining grid 16x16 (256 px). On an
    image whose every 14-pixel patch is bicubic-upsampled to 16, it computes timm's patch-14 model."""
    ref = _timm_eva02()
    ours = RoPEViT.from_preset('eva02', arch=ARCH, patch_size=16, pretrain_img_size=256).eval()
    log = ConversionLog()
    sd = convert_vit_state_dict(ref.state_dict(), ours, log=log)
    assert 'patch kernel 14x14 resized' in log.converted['patch_embed.proj.weight']
    missing, unexpected = ours.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, 1:]
        (out,) = ours(_upsample_each_patch(x, 14, 16))
    assert out.shape == (1, 64, size[0] // 14, size[1] // 14)
    assert (out.flatten(2).transpose(1, 2) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize('size', [(224, 224), (196, 308), (140, 182)])
def test_parity_with_timm_eva02_small_packed_glu_without_sub_ln(size):
    """timm's EVA-02-Ti/S: a packed GLU MLP (one fc1, gate first) and no sub-LN."""
    torch.manual_seed(0)
    ref = timm.create_model('eva02_small_patch14_224', pretrained=False, embed_dim=64, depth=2, num_heads=2,
                            dynamic_img_size=True).eval()
    assert type(ref.blocks[0].mlp).__name__ == 'GluMlp'
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.endswith(('q_proj.weight', 'k_proj.weight')):
                p.mul_(10)
            elif n in ('cls_token', 'pos_embed'):
                p.normal_()
    ours = RoPEViT.from_preset('eva02', arch=ARCH, mlp_norm=False).eval()
    log = ConversionLog()
    missing, unexpected = ours.load_state_dict(convert_vit_state_dict(ref.state_dict(), ours, log=log), strict=True)
    assert not missing and not unexpected and 'blocks.0.mlp.fc1_g.weight' in log.converted
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        err = (ours(x)[0].flatten(2).transpose(1, 2) - ref.forward_features(x)[:, 1:]).abs().max().item()
    assert err <= 1e-5


@pytest.mark.parametrize('arch,name', [('tiny', 'eva02_tiny_patch14_224'), ('small', 'eva02_small_patch14_224'),
                                       ('base', 'eva02_base_patch14_224')])
def test_named_arch_of_the_eva02_preset_has_timm_parameter_count(arch, name):
    ours = RoPEViT.from_preset('eva02', arch=arch)
    ref = timm.create_model(name, pretrained=False, num_classes=0)
    pooled = sum(p.numel() for p in ref.fc_norm.parameters())           # timm pools through fc_norm; no backbone part
    C, depth = ref.embed_dim, len(ref.blocks)
    # ours: one qkv bias [3C] per block (k's zeros) where timm has q and v biases; no class-token position
    # (timm's is folded into the class token at load)
    expected = sum(p.numel() for p in ref.parameters()) - pooled + depth * C - C
    assert sum(p.numel() for p in ours.parameters()) == expected
    assert (ours.blocks[0].mlp.norm is None or isinstance(ours.blocks[0].mlp.norm, nn.Identity)) == (arch != 'base')


def test_convert_checkpoint_cli_with_preset_from_safetensors(tmp_path):
    """tools/convert_checkpoint.py --preset eva02 (patch 16): the written state dict computes timm's
    model on the patch-upsampled image; family options given beside --preset are refused."""
    from safetensors.torch import save_file
    from ropevit.cli import ToolError
    from tools.convert_checkpoint import main
    ref = _timm_eva02()
    src = tmp_path / 'eva02.safetensors'
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(src))
    arch = '{"embed_dims": 64, "num_heads": 2, "depth": 2, "mlp_ratio": 2.6666666666666665}'
    args = ['--model', 'vit', str(src), str(tmp_path / 'out.pth'), '--preset', 'eva02', '--arch', arch,
            '--patch-size', '16', '--pretrain-img-size', '256']
    assert main(args) == 0
    ours = RoPEViT.from_preset('eva02', arch=ARCH, patch_size=16, pretrain_img_size=256).eval()
    ours.load_state_dict(torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict'], strict=True)
    x = torch.randn(1, 3, 224, 168)
    with torch.no_grad():
        err = (ours(_upsample_each_patch(x, 14, 16))[0].flatten(2).transpose(1, 2)
               - ref.forward_features(x)[:, 1:]).abs().max().item()
    assert err <= 1e-5
    with pytest.raises(ToolError, match='--rope: set by --preset eva02'):
        main(args + ['--rope', 'mixed'])
