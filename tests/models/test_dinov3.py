"""RoPEViT as DINOv3 (timm's ``vit_*_patch16_dinov3``): registers, normalised RoPE coordinates,
rotate-half pairs reordered at load. Oracle: timm's own model with the same random weights."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ropevit.checkpoint.vit import convert_vit_state_dict, rotate_half_to_interleaved
from ropevit.models.vit import RoPEViT

TINY = dict(embed_dim=64, depth=2, num_heads=2)


def _timm_dinov3(name: str = 'vit_small_patch16_dinov3') -> nn.Module:
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, **TINY).eval()
    with torch.no_grad():                       # LayerScale 1e-5 and init std 0.02 would hide RoPE errors
        for n, p in ref.named_parameters():
            if n.endswith(('gamma_1', 'gamma_2')):
                p.fill_(0.5)
            elif n.endswith('qkv.weight'):
                p.mul_(10)
            elif n.endswith(('cls_token', 'reg_token')):
                p.normal_()
    return ref


def _ours(ref: nn.Module, qkv_bias: bool) -> RoPEViT:
    ours = RoPEViT(arch=dict(embed_dims=64, num_heads=2, depth=2), patch_size=16, rope='axial', rope_theta=100,
                   rope_coords='normalized', with_cls_token=True, num_reg_tokens=4, qkv_bias=qkv_bias,
                   layer_scale_init_value=1.0, norm_layer=lambda c: nn.LayerNorm(c, eps=1e-5)).eval()
    log_dropped: dict[str, str] = {}
    sd = convert_vit_state_dict(ref.state_dict(), ours, dropped=log_dropped)
    missing, unexpected = ours.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    return ours


def test_rotate_half_permutation_is_a_permutation_and_maps_the_first_x_pair():
    perm = rotate_half_to_interleaved(16)
    assert sorted(perm.tolist()) == list(range(16))
    # our pair 0 (channels 0, 1) is x with the fastest magnitude: DINOv3 pair hd/4 = 4 (channels 4, 12)
    assert perm[:2].tolist() == [4, 12] and perm[8:10].tolist() == [0, 8]


@pytest.mark.parametrize('name,bias', [('vit_small_patch16_dinov3', False), ('vit_small_patch16_dinov3_qkvb', True)])
@pytest.mark.parametrize('size', [(224, 224), (320, 192), (160, 288)])
def test_parity_with_timm_dinov3_at_several_sizes(name, bias, size):
    ref = _timm_dinov3(name)
    ours = _ours(ref, bias)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, ref.num_prefix_tokens:]        # [B, N, C], final-normed
        (out,) = ours(x)                                                     # [B, C, H/16, W/16]
    assert out.shape == (2, 64, size[0] // 16, size[1] // 16)
    err = (out.flatten(2).transpose(1, 2) - expected).abs().max().item()
    assert err <= 1e-5
    # without the reordering (timm's q/k rows as they are) the same weights give another function
    raw = ours.state_dict()
    for i, blk in enumerate(ref.blocks):
        raw[f'blocks.{i}.attn.qkv.weight'] = blk.attn.qkv.weight.detach()
        if bias:
            raw[f'blocks.{i}.attn.qkv.bias'] = torch.cat([blk.attn.q_bias, torch.zeros_like(blk.attn.q_bias),
                                                          blk.attn.v_bias]).detach()
    ours.load_state_dict(raw, strict=True)
    with torch.no_grad():
        assert (ours(x)[0].flatten(2).transpose(1, 2) - expected).abs().max() > 1e-3


def _windowed_reference(ref: nn.Module, x: torch.Tensor, ws: int, windowed: set[int]) -> torch.Tensor:
    """timm's DINOv3 with the attention of the blocks in ``windowed`` run on windows: every
    ``ws x ws`` window of real tokens (edge windows smaller, no padding) attends together with the
    prefix tokens (the window's output rows are kept), and the prefix tokens attend to all tokens.
    RoPE rows are those of the whole grid. Returns the final-normed patch tokens ``[B, N, C]``."""
    B, _, Hi, Wi = x.shape
    H, W = Hi // 16, Wi // 16
    tok = ref.patch_embed(x)                                                   # [B, H, W, C] (dynamic size)
    tok, rope = ref._pos_embed(tok)                                            # [B, npt + N, C], [N, 2 hd]
    npt = ref.num_prefix_tokens
    for i, blk in enumerate(ref.blocks):
        if i not in windowed:
            tok = blk(tok, rope=rope)
            continue
        y = blk.norm1(tok)
        out = torch.empty_like(y)
        out[:, :npt] = blk.attn(y, rope=rope)[:, :npt]                         # prefix: global
        for r0 in range(0, H, ws):
            for c0 in range(0, W, ws):
                idx = torch.tensor([r * W + c for r in range(r0, min(r0 + ws, H)) for c in range(c0, min(c0 + ws, W))])
                seq = torch.cat([y[:, :npt], y[:, npt + idx]], 1)
                out[:, npt + idx] = blk.attn(seq, rope=rope[idx])[:, npt:]
        tok = tok + blk.gamma_1 * out
        tok = tok + blk.gamma_2 * blk.mlp(blk.norm2(tok))
    return ref.norm(tok)[:, npt:]


@pytest.mark.parametrize('size,ws', [((224, 224), 4), ((320, 192), 3), ((160, 288), 5)])
def test_windowed_parity_with_timm_dinov3_run_on_the_same_windows(size, ws):
    """Block 0 windowed (padding at the edges of 14x14 / 20x12 / 10x18 grids, masked), block 1 global."""
    ref = _timm_dinov3('vit_small_patch16_dinov3_qkvb')
    glob = _ours(ref, True)
    ours = RoPEViT(arch=dict(embed_dims=64, num_heads=2, depth=2), patch_size=16, rope='axial', rope_theta=100,
                   rope_coords='normalized', num_reg_tokens=4, qkv_bias=True, layer_scale_init_value=1.0,
                   window_size=ws, global_attn_indexes=(1,), norm_layer=lambda c: nn.LayerNorm(c, eps=1e-5)).eval()
    ours.load_state_dict(glob.state_dict(), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = _windowed_reference(ref, x, ws, {0})
        (out,) = ours(x)
        err = (out.flatten(2).transpose(1, 2) - expected).abs().max().item()
        assert err <= 1e-5
        assert (glob(x)[0] - out).abs().max() > 1e-3                          # the windows do change it


def test_dinov3_checkpoint_into_index_coordinates_warns_naming_the_option():
    from ropevit.checkpoint.common import ConversionLog
    ref = _timm_dinov3()
    model = RoPEViT(arch=dict(embed_dims=64, num_heads=2, depth=2), patch_size=16, rope='axial', rope_theta=100,
                    num_reg_tokens=4, qkv_bias=False, layer_scale_init_value=1.0)
    log = ConversionLog()
    convert_vit_state_dict(ref.state_dict(), model, log=log)
    assert any("rope_coords='index'" in w and "rope_coords='normalized'" in w for w in log.warnings)
    log = ConversionLog()
    convert_vit_state_dict(ref.state_dict(), _ours(ref, False), log=log)
    assert not any('rope_coords' in w for w in log.warnings)


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_timm_dinov3_file_loads_through_init_cfg_with_every_key_accounted_for(tmp_path, suffix):
    from mmengine.registry import MODELS
    import ropevit.mm  # noqa: F401
    ref = _timm_dinov3('vit_small_patch16_dinov3_qkvb')
    path = str(tmp_path / f'dinov3{suffix}')
    if suffix == '.pth':
        torch.save(ref.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    ours = MODELS.build(dict(type='RoPEViT', arch=dict(embed_dims=64, num_heads=2, depth=2), patch_size=16,
                             rope='axial', rope_theta=100, rope_coords='normalized', num_reg_tokens=4,
                             layer_scale_init_value=1.0, norm_cfg=dict(type='LN', eps=1e-5), window_size=4,
                             global_attn_indexes=(1,), init_cfg=dict(type='Pretrained', checkpoint=path)))
    ours.init_weights()
    ours.eval()
    assert not ours.load_report.missing and not ours.load_report.unexpected
    x = torch.randn(1, 3, 192, 224)
    with torch.no_grad():
        err = (ours(x)[0].flatten(2).transpose(1, 2) - _windowed_reference(ref, x, 4, {0})).abs().max().item()
    assert err <= 1e-5


def test_corrupt_safetensors_file_is_one_clear_error(tmp_path):
    from ropevit.checkpoint.io import load_checkpoint_file
    path = tmp_path / 'broken.safetensors'
    path.write_bytes(b'\x00' * 7)
    with pytest.raises(RuntimeError, match=r'broken\.safetensors \(truncated or not a safetensors file\)'):
        load_checkpoint_file(path)
