"""RoPEViT: parity with timm's RoPE-ViT ports through init_cfg, window vs global attention,
padding, odd input sizes, option combinations, gradients, checkpointing, freezing, lr-decay ids."""
import itertools

import pytest
import timm
import torch

import ropevit.mm  # noqa: F401  (registers RoPEViT)
from mmengine.registry import MODELS
from ropevit.layers import rope_tables
from ropevit.layers.rope_tables import RopeTables
from ropevit.models.vit import RoPEViT

TINY = dict(embed_dims=64, num_heads=2, depth=2)          # head_dim 32 (divisible by 4)
VARIANTS = {  # timm model -> (rope, use_ape)
    'vit_small_patch16_rope_224': ('axial', False),
    'vit_small_patch16_rope_mixed_224': ('mixed', False),
    'vit_small_patch16_rope_ape_224': ('axial', True),
    'vit_small_patch16_rope_mixed_ape_224': ('mixed', True),
}


@pytest.fixture(scope='module')
def timm_checkpoints(tmp_path_factory):
    """One random-weight timm model per variant, saved as timm saves it (state dict incl. head)."""
    out = {}
    d = tmp_path_factory.mktemp('timm')
    for name in VARIANTS:
        torch.manual_seed(1)
        model = timm.create_model(name, pretrained=False, embed_dim=TINY['embed_dims'], depth=TINY['depth'],
                                  num_heads=TINY['num_heads'])
        with torch.no_grad():  # LayerScale 1e-5 would hide attention errors: make blocks matter
            for blk in model.blocks:
                blk.gamma_1.fill_(0.5)
                blk.gamma_2.fill_(0.5)
        path = d / f'{name}.pth'
        torch.save(model.state_dict(), path)
        out[name] = (path, model.state_dict())
    return out


@pytest.mark.parametrize('size', [(224, 224), (384, 384), (320, 192)])
@pytest.mark.parametrize('name', list(VARIANTS))
def test_parity_with_timm_forward_features(timm_checkpoints, name, size):
    rope, ape = VARIANTS[name]
    path, sd = timm_checkpoints[name]
    ref = timm.create_model(name, pretrained=False, embed_dim=TINY['embed_dims'], depth=TINY['depth'],
                            num_heads=TINY['num_heads'], dynamic_img_size=size != (224, 224)).eval()
    ref.load_state_dict(sd)
    ours = MODELS.build(dict(type='RoPEViT', arch=TINY, rope=rope, use_ape=ape,
                             init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    ours.init_weights()
    ours.eval()
    assert set(ours.load_report.dropped) == {'head.weight', 'head.bias'}
    assert not ours.load_report.missing and not ours.load_report.unexpected
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, 1:]                    # [B, N, C], final-normed, no cls
        (out,) = ours(x)                                              # [B, C, H/16, W/16]
    assert out.shape == (2, 64, size[0] // 16, size[1] // 16)
    assert (out.flatten(2).transpose(1, 2) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize('rope', ['axial', 'mixed', 'none'])
@pytest.mark.parametrize('ws', [4, 6])  # 6: one window covers the 4x5 grid plus masked padding
def test_window_covering_grid_equals_global(rope, ws):
    base = dict(arch=dict(embed_dims=32, num_heads=2, depth=2), with_cls_token=False, rope=rope,
                use_ape=rope == 'none', layer_scale_init_value=0.5)
    glob = RoPEViT(**base).eval()
    win = RoPEViT(**base, window_size=ws).eval()
    win.load_state_dict(glob.state_dict())
    x = torch.randn(1, 3, 64, 64 if ws == 4 else 80)   # grid 4x4 or 4x5
    with torch.no_grad():
        torch.testing.assert_close(win(x)[0], glob(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize('rope', ['axial', 'mixed'])
def test_window_block_equals_absolute_rope_restricted_to_each_window(rope):
    """Block 0 windowed (ws=3 on a 5x7 grid: padded, masked), block 1 global. Reference: block 0
    as global attention over each window's real tokens alone, with RoPE tables of the
    *absolute* positions of those tokens; block 1 over the real 5x7 grid."""
    torch.manual_seed(0)
    m = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), with_cls_token=False, rope=rope, window_size=3,
                global_attn_indexes=(1,), layer_scale_init_value=0.5, final_norm=False).eval()
    x = torch.randn(2, 3, 80, 112)
    H, W, ws = 5, 7, 3
    with torch.no_grad():
        (out,) = m(x)
        tok = m.patch_embed.proj(x).flatten(2).transpose(1, 2)              # [B, 35, C]
        cos, sin, _, _ = m.rope.tables((H, W), tok.device)                  # absolute positions
        blk0 = m.blocks[0]
        blk0.window_size = 0                                                # same weights, plain attention
        ref = torch.empty_like(tok)
        for r0 in range(0, H, ws):
            for c0 in range(0, W, ws):
                idx = torch.tensor([r * W + c for r in range(r0, min(r0 + ws, H))
                                    for c in range(c0, min(c0 + ws, W))])
                tables = RopeTables(cos[idx], sin[idx]) if rope == 'axial' else RopeTables(cos[0][:, idx], sin[0][:, idx])
                ref[:, idx] = blk0(tok[:, idx], (1, len(idx)), tables)
        blk0.window_size = ws
        tables1 = RopeTables(cos, sin) if rope == 'axial' else RopeTables(cos[1], sin[1])
        ref = m.blocks[1](ref, (H, W), tables1)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(2, 32, H, W), atol=1e-5, rtol=0)


@pytest.mark.parametrize('shape,kw,expected', [
    ((1, 3, 17, 23), dict(), (2, 2)),
    ((2, 3, 200, 333), dict(), (13, 21)),
    ((2, 3, 200, 333), dict(with_cls_token=False, window_size=4, global_attn_indexes=(1,)), (13, 21)),
    ((1, 3, 1024, 1024), dict(with_cls_token=False, window_size=14, global_attn_indexes=(1,)), (64, 64)),
])
def test_odd_shapes(shape, kw, expected):
    m = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), **kw).eval()
    with torch.no_grad():
        (out,) = m(torch.randn(*shape))
    assert out.shape == (shape[0], 32, *expected) and torch.isfinite(out).all()


OPTIONS = list(itertools.product(['axial', 'mixed', 'none'], [False, True], [0, 3], [True, False], [None, 1e-5]))


@pytest.mark.parametrize('rope,use_ape,ws,final_norm,ls', OPTIONS)
def test_every_valid_option_combination_builds_and_runs(rope, use_ape, ws, final_norm, ls):
    m = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=3), rope=rope, use_ape=use_ape, window_size=ws,
                with_cls_token=ws == 0, global_attn_indexes=(1,) if ws else (), final_norm=final_norm,
                layer_scale_init_value=ls, out_indices=(0, 2), drop_path_rate=0.1)
    outs = m(torch.randn(1, 3, 40, 72))
    assert [o.shape for o in outs] == [(1, 32, 3, 5)] * 2
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    assert ('rope.freqs' in m.state_dict()) == (rope == 'mixed')
    assert not any(k.startswith('rope.') for k, _ in m.named_buffers(prefix='') if k in m.state_dict())


@pytest.mark.parametrize('kw,match', [
    (dict(arch='huge'), 'arch'),
    (dict(arch=dict(embed_dims=64, num_heads=2)), 'arch'),
    (dict(arch=dict(embed_dims=64, num_heads=3, depth=2)), 'embed_dims'),
    (dict(arch=dict(embed_dims=36, num_heads=2, depth=2), rope='axial'), 'head_dim'),
    (dict(rope='cat'), 'rope'),
    (dict(window_size=-1, with_cls_token=False), 'window_size'),
    (dict(window_size=4, with_cls_token=False, global_attn_indexes=(2,)), 'global_attn_indexes'),
    (dict(out_indices=(2,)), 'out_indices'),
    (dict(out_indices=(-3,)), 'out_indices'),
    (dict(frozen_stages=3), 'frozen_stages'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
    (dict(rope_theta=0.0), 'rope_theta'),
])
def test_invalid_options_raise_value_error_naming_the_option(kw, match):
    kw = dict(dict(arch=dict(embed_dims=32, num_heads=2, depth=2)), **kw)
    with pytest.raises(ValueError, match=match):
        RoPEViT(**kw)


def test_gradients_reach_mixed_frequencies_of_every_block():
    m = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=3), rope='mixed', layer_scale_init_value=0.5)
    m(torch.randn(1, 3, 48, 48))[0].pow(2).mean().backward()
    g = m.rope.freqs.grad
    assert g is not None and g.shape == (2, 3, 2, 8)
    assert (g.abs().sum(dim=(0, 2, 3)) > 0).all()


@pytest.mark.parametrize('ws', [0, 3])
def test_with_cp_gives_same_gradients(ws):
    kw = dict(arch=dict(embed_dims=32, num_heads=2, depth=2), rope='mixed', with_cls_token=ws == 0,
              window_size=ws, layer_scale_init_value=0.5)
    a = RoPEViT(**kw)
    b = RoPEViT(**kw, with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 80)
    for m in (a, b):
        m(x)[0].pow(2).mean().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_rope_tables_once_per_grid_and_axial_cache(monkeypatch):
    calls = []
    real = rope_tables.rope_cos_sin
    monkeypatch.setattr(rope_tables, 'rope_cos_sin', lambda f, c: calls.append(tuple(c.shape)) or real(f, c))
    kw = dict(arch=dict(embed_dims=32, num_heads=2, depth=4), with_cls_token=False, window_size=3,
              global_attn_indexes=(1, 3))
    mixed = RoPEViT(**kw, rope='mixed')
    x = torch.randn(1, 3, 80, 96)
    mixed(x)
    assert sorted(calls) == [(9, 2), (30, 2)]           # window grid 3x3, global grid 5x6: once each
    calls.clear()
    RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), rope='mixed')(x)
    assert calls == [(1 + 30, 2)]                       # with a class token: its identity row included
    calls.clear()
    axial = RoPEViT(**kw, rope='axial')
    axial(x)
    axial(x)
    assert sorted(calls) == [(9, 2), (30, 2)]           # fixed tables: cached across forwards
    axial(torch.randn(1, 3, 64, 64))
    assert len(calls) == 3                              # a new global grid (4x4) -> one new table


def _sliced_rotation_attention(attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, npt: int):
    """Reference: ``attn`` rotating only the patch tokens' q/k (prefix sliced off, rotated, concatenated back)."""
    import torch.nn.functional as F
    from ropevit.layers.rope import apply_rope
    B, L, C = x.shape
    qkv = attn.qkv(x).reshape(B, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, nh, L, hd]
    qk = torch.cat([qkv[:2, ..., :npt, :], apply_rope(qkv[:2, ..., npt:, :], cos, sin)], dim=-2)
    q, k = qk.unbind(0)
    out = F.scaled_dot_product_attention(q, k, qkv[2])                                          # [B, nh, L, hd]
    return attn.proj(out.transpose(1, 2).reshape(B, L, C))


@pytest.mark.parametrize('rope', ['axial', 'mixed'])
def test_prefix_identity_rows_equal_the_sliced_rotation(rope):
    """Tables with identity rows for the class token rotate all tokens in one go: the class
    token's q/k stay exactly as they are, and attention equals rotating only the patch tokens
    (slicing q/k and concatenating them back). Tables without the prefix rows are refused."""
    from ropevit.layers.attention import RoPEAttention
    from ropevit.layers.rope import apply_rope
    m = RoPEViT(arch=dict(embed_dims=64, num_heads=2, depth=2), rope=rope)
    hw, npt = (3, 5), 1
    tables = m.rope.tables(hw, torch.device('cpu'), [0], num_prefix_tokens=npt)
    patch_only = m.rope.tables(hw, torch.device('cpu'), [0])
    cos, sin, cos0, sin0 = tables.cos, tables.sin, patch_only.cos, patch_only.sin
    if rope == 'mixed':
        cos, sin, cos0, sin0 = cos[0], sin[0], cos0[0], sin0[0]                      # [nh, 1 + N, P]
    assert tables.num_prefix_tokens == npt and patch_only.num_prefix_tokens == 0
    assert cos.shape[-2] == npt + 15 and torch.equal(cos[..., npt:, :], cos0) and torch.equal(sin[..., npt:, :], sin0)
    assert torch.all(cos[..., :npt, :] == 1) and torch.all(sin[..., :npt, :] == 0)
    qk = torch.randn(2, 2, 2, npt + 15, 32)
    assert torch.equal(apply_rope(qk, cos, sin)[..., :npt, :], qk[..., :npt, :])
    attn = RoPEAttention(64, 2)
    x = torch.randn(2, npt + 15, 64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, RopeTables(cos, sin, num_prefix_tokens=npt)),
                                   _sliced_rotation_attention(attn, x, cos0, sin0, npt), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match='identity row per prefix token'):
        attn(x, RopeTables(cos0, sin0))


@pytest.mark.parametrize('model', ['vit', 'swin'])
def test_tables_cached_under_inference_mode_do_not_reach_a_training_step(model):
    """A validation pass under torch.inference_mode, then a training step at the same size:
    cached tables (and their complex rotation, which autograd saves) must not be inference tensors."""
    from ropevit.models.swin import RoPESwin
    m = (RoPEViT(arch=dict(embed_dims=32, depth=2, num_heads=2), rope='axial') if model == 'vit' else
         RoPESwin(arch=dict(embed_dims=16, depths=(2,), num_heads=(2,)), rope='axial', window_size=4,
                  out_indices=(0,)))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        m(x)
    sum(o.sum() for o in m(x)).backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if 'qkv.weight' in n)


def test_bf16_autocast_forward_uses_float32_tables():
    m = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), rope='mixed').eval()
    tables = []
    real = m.rope.tables
    m.rope.tables = lambda *a, **k: tables.append(real(*a, **k)) or tables[-1]
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        (out,) = m(torch.randn(1, 3, 48, 48))
    assert torch.isfinite(out.float()).all()   # (the final LayerNorm runs in float32 under autocast)
    assert tables and all(t.cos.dtype == t.sin.dtype == torch.float32 for t in tables)


def test_frozen_stages():
    m = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=3), rope='mixed', use_ape=True, frozen_stages=1,
                layer_scale_init_value=0.5)
    m.train()
    assert not m.patch_embed.proj.weight.requires_grad and not m.cls_token.requires_grad
    assert not m.pos_embed.requires_grad
    assert not any(p.requires_grad for p in m.blocks[0].parameters())
    assert all(p.requires_grad for p in m.blocks[1].parameters()) and m.norm.weight.requires_grad
    assert not m.blocks[0].training and m.blocks[1].training
    out = m(torch.randn(1, 3, 32, 32))[0]
    (out * torch.randn_like(out)).sum().backward()
    g = m.rope.freqs.grad
    assert g[:, 0].abs().sum() == 0 and g[:, 1:].abs().sum() > 0
    full = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=3), rope='mixed', frozen_stages=3)
    assert not any(p.requires_grad for p in full.parameters())


def test_layer_ids_for_lr_decay():
    m = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=3), rope='mixed', use_ape=True)
    assert m.num_layers == 5
    ids = {n: m.get_layer_id(n) for n, _ in m.named_parameters()}
    assert ids['cls_token'] == ids['pos_embed'] == ids['patch_embed.proj.weight'] == 0
    assert ids['blocks.0.attn.qkv.weight'] == 1 and ids['blocks.2.gamma_2'] == 3
    assert ids['norm.weight'] == ids['rope.freqs'] == 4 == m.num_layers - 1
    assert m.get_layer_id('backbone.blocks.1.mlp.fc1.bias') == 2
    assert set(ids.values()) == set(range(m.num_layers))
    with pytest.raises(ValueError, match='neck'):
        m.get_layer_id('neck.lateral.weight')


def test_mm_norm_and_act_cfg_reach_every_layer_and_change_the_output():
    """``norm_cfg`` / ``act_cfg`` given to the mm wrapper build every norm (norm1, norm2 of each block and
    the final norm) and every MLP activation; the output equals the core model built directly with
    torch's ``LayerNorm(eps=0.5)`` / ``ReLU`` and the same weights, and differs from the defaults'."""
    arch = dict(embed_dims=32, num_heads=2, depth=2)
    common = dict(arch=arch, patch_size=8, layer_scale_init_value=1.0)  # blocks matter in the output
    torch.manual_seed(0)
    m = MODELS.build(dict(type='RoPEViT', **common, norm_cfg=dict(type='LN', eps=0.5), act_cfg=dict(type='ReLU')))
    m.init_weights()
    with torch.no_grad():  # non-trivial affine norms, so a wrong norm type would show
        for n in m.modules():
            if isinstance(n, torch.nn.LayerNorm):
                n.weight.uniform_(0.5, 1.5)
                n.bias.uniform_(-0.5, 0.5)
    norms = [m.norm] + [b.norm1 for b in m.blocks] + [b.norm2 for b in m.blocks]
    assert all(type(n) is torch.nn.LayerNorm and n.eps == 0.5 for n in norms), norms
    assert all(type(b.mlp.act) is torch.nn.ReLU for b in m.blocks), [b.mlp.act for b in m.blocks]

    explicit = RoPEViT(**common, norm_layer=lambda c: torch.nn.LayerNorm(c, eps=0.5), act_layer=torch.nn.ReLU)
    default = MODELS.build(dict(type='RoPEViT', **common))
    assert all(n.eps == 1e-6 for n in [default.norm] + [b.norm1 for b in default.blocks])
    assert all(type(b.mlp.act) is torch.nn.GELU for b in default.blocks)
    explicit.load_state_dict(m.state_dict())
    default.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        got, want, dflt = m(x)[0], explicit(x)[0], default(x)[0]
    assert got.shape == (2, 32, 4, 5)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (got - dflt).abs().max() > 0.1, 'norm_cfg / act_cfg did not change the output'
