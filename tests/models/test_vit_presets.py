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
