"""``preset='dinov3' | 'eva02'`` through the mm registry: one key gives the family's options, and
timm's weights of that family then load strictly and compute timm's function (windowed too)."""
from __future__ import annotations

import pytest
import timm
import torch

import ropevit.mm  # noqa: F401
from mmengine.registry import MODELS
from ropevit.models.vit import VIT_PRESETS, RoPEViT, vit_preset_kwargs

CASES = {  # preset -> (timm model, patch, prefix tokens)
    'dinov3': ('vit_small_patch16_dinov3_qkvb', 16, 5),
    'eva02': ('eva02_base_patch14_224', 14, 1),
}


@pytest.mark.parametrize('preset', list(CASES))
def test_preset_config_loads_timm_weights_and_matches_timm(preset, tmp_path):
    name, patch, npt = CASES[preset]
    torch.manual_seed(0)
    kw = dict(dynamic_img_size=True) if preset == 'eva02' else {}
    ref = timm.create_model(name, pretrained=False, embed_dim=64, depth=2, num_heads=2, **kw).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.endswith(('qkv.weight', 'q_proj.weight', 'k_proj.weight')):
                p.mul_(10)
            elif n.endswith(('gamma_1', 'gamma_2')):
                p.fill_(0.5)
    path = tmp_path / f'{preset}.pth'
    torch.save(ref.state_dict(), path)
    arch = dict(embed_dims=64, num_heads=2, depth=2)
    model = MODELS.build(dict(type='RoPEViT', preset=preset, arch=arch, qkv_bias=True,
                              init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    model.init_weights()
    model.eval()
    assert not model.load_report.missing and not model.load_report.unexpected
    assert model.num_prefix_tokens == npt and model.patch_size == patch
    x = torch.randn(1, 3, 12 * patch, 9 * patch)                          # non-square, not the 224 grid
    with torch.no_grad():
        expected = ref.forward_features(x)[:, npt:]
        (out,) = model(x)
    assert (out.flatten(2).transpose(1, 2) - expected).abs().max().item() <= 1e-5


def test_explicit_keywords_win_over_the_preset_and_unknown_presets_are_refused():
    kw = vit_preset_kwargs('eva02', dict(arch='base', rope_coords='normalized', use_ape=False))
    assert kw['rope_coords'] == 'normalized' and kw['use_ape'] is False and kw['mlp_layer'] == 'swiglu'
    assert kw['arch'] == dict(embed_dims=768, num_heads=12, depth=12, mlp_ratio=4 * 2 / 3)
    m = RoPEViT.from_preset('dinov3', arch=dict(embed_dims=64, num_heads=2, depth=2))
    assert (m.num_reg_tokens, m.rope_coords, m.rope_theta, m.norm.eps) == (4, 'normalized', 100.0, 1e-5)
    with pytest.raises(ValueError, match=r"preset='sam'.*\('rope-vit', 'dinov3', 'eva02'\)"):
        vit_preset_kwargs('sam', {})
    assert set(VIT_PRESETS) == {'rope-vit', 'dinov3', 'eva02'}


def _windowed(preset: str, **kw) -> RoPEViT:
    torch.manual_seed(0)
    return RoPEViT.from_preset(preset, arch=dict(embed_dims=32, num_heads=2, depth=2), window_size=3,
                               global_attn_indexes=(1,), layer_scale_init_value=0.5 if preset == 'dinov3' else None,
                               **kw)


def test_windowed_prefix_tokens_under_compile_equal_eager():
    """Prefix tokens beside window blocks (DINOv3: 5 of them; EVA-02 shares the code path)."""
    m = _windowed('dinov3').eval()
    compiled = torch.compile(m)
    with torch.no_grad():
        for hw in ((5, 7), (4, 4)):
            x = torch.randn(1, 3, hw[0] * 16, hw[1] * 16)
            torch.testing.assert_close(compiled(x)[0], m(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize('preset', list(CASES))
def test_windowed_prefix_tokens_with_checkpointing_give_the_same_gradients(preset):
    patch = CASES[preset][1]
    m, cp = _windowed(preset), _windowed(preset, with_cp=True)
    cp.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 5 * patch, 7 * patch)
    m(x)[0].square().sum().backward()
    cp(x)[0].square().sum().backward()
    for (n, a), b in zip(m.named_parameters(), cp.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=n)
