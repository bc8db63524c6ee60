"""RoPESwin: parity with mmdet's SwinTransformer, window RoPE laws, padding, larger
inference windows, shapes, options, layer ids, freezing and checkpointing."""

import pytest
import torch

from ropevit.layers import swin_attention
from ropevit.layers.rope import grid_coords
from ropevit.models.swin import SWIN_ARCHS, RoPESwin

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])


# ----------------------------------------------------------------------------- mmdet parity
def _mmdet_swin(arch: dict, **kw):
    from mmdet.models.backbones.swin import SwinTransformer
    ref = SwinTransformer(**arch, drop_path_rate=0.0, **kw)
    ref.init_weights()
    for name, p in ref.named_parameters():      # non-trivial tables and norms
        if 'relative_position_bias_table' in name or 'norm' in name:
            p.data.normal_(0, 0.5 if 'table' in name else 0.1).add_(1.0 if name.endswith('norm1.weight') else 0)
    ref.eval()
    return ref


def _plain_swin_from(ref, arch: dict, **kw) -> RoPESwin:
    from ropevit.checkpoint.swin import convert_swin_state_dict
    m = RoPESwin(arch=arch, rope='none', use_rpb=True, mask_padding=False, drop_path_rate=0.0, **kw)
    sd = convert_swin_state_dict(ref.state_dict(), m)
    missing, unexpected = m.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    return m.eval()


@pytest.mark.parametrize('size', [(2, 3, 224, 224), (1, 3, 113, 177)])
def test_parity_with_mmdet_swin(size):
    ref = _mmdet_swin(TINY)
    ours = _plain_swin_from(ref, TINY)
    x = torch.randn(size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert len(got) == 4
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert (e - g).abs().max().item() <= 1e-5


def test_parity_with_mmdet_swin_tiny_preset():
    arch = dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])
    ref = _mmdet_swin(arch, out_indices=(1, 3))
    ours = _plain_swin_from(ref, 'tiny', out_indices=(1, 3))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert [g.shape[1] for g in got] == [192, 768]
    assert max((e - g).abs().max().item() for e, g in zip(expected, got)) <= 1e-5


# ----------------------------------------------------------------------------- window attention laws
# (The float64 reference of the attention itself, written from the formulas, is in
# tests/layers/test_swin_reference.py; the original RoPE-Swin forward in tests/models/test_swin_original.py.)
def _stage_inputs(model: RoPESwin, stage: int, x: torch.Tensor, hw):
    st = model.stages[stage]
    return st, st.attention_masks(hw, x.device, x.dtype), st.block_tables(x.device)


def test_padding_values_do_not_change_real_tokens(monkeypatch):
    hw = (13, 10)
    x = torch.randn(1, 130, 64)

    def run(mask_padding: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = RoPESwin(arch=TINY, window_size=4, mask_padding=mask_padding).eval()
        st, masks, tables = _stage_inputs(model, 1, x, hw)
        with torch.no_grad():
            return torch.stack([blk.attn(x, hw, masks[blk.attn.shift_size > 0], rope)
                                for blk, rope in zip(st.blocks, tables)])

    clean = {m: run(m) for m in (True, False)}

    orig = swin_attention.pad_to_multiple

    def noisy_pad(t, multiple):                                      # padding filled with noise
        padded, phw = orig(t, multiple)
        real = torch.zeros_like(padded, dtype=torch.bool)
        real[:, :t.shape[1], :t.shape[2]] = True
        return torch.where(real, padded, 100 * torch.randn_like(padded)), phw

    monkeypatch.setattr(swin_attention, 'pad_to_multiple', noisy_pad)
    assert torch.allclose(run(True), clean[True], atol=1e-6)         # masked: padding is irrelevant
    assert not torch.allclose(run(False), clean[False], atol=1e-3)   # mmdet mode: padding leaks


def test_larger_window_at_inference_loads_and_runs():
    trained = RoPESwin(arch=TINY, window_size=7)
    bigger = RoPESwin(arch=TINY, window_size=12).eval()
    bigger.load_state_dict(trained.state_dict(), strict=True)          # RoPE: no table to resize
    with torch.no_grad():
        outs = bigger(torch.randn(1, 3, 130, 98))
    assert [tuple(o.shape[-2:]) for o in outs] == [(33, 25), (17, 13), (9, 7), (5, 4)]
    # (its attention against the reference: tests/layers/test_swin_reference.py)


def test_rope_scores_depend_only_on_in_window_offsets():
    model = RoPESwin(arch=TINY, window_size=5, rope='mixed').eval()
    w = model.stages[2].blocks[1].attn.w_msa
    ws = 5
    tok = torch.randn(1, 1, 128).expand(1, ws * ws, 128)             # identical content everywhere
    with torch.no_grad():
        q, k, _ = w.qkv_rotated(tok, model.stages[2].block_tables(tok.device)[1])
        scores = q @ k.transpose(-1, -2)                                 # [1, nh, N, N]
    pos = grid_coords(ws, ws).long()                                     # [N, 2]
    offset = pos[None, :, :] - pos[:, None, :]                           # [N, N, 2] key - query
    key = (offset[..., 0] + ws) * 100 + offset[..., 1] + ws
    for o in key.unique():
        vals = scores[0][:, key == o]                                    # [nh, pairs]
        assert (vals - vals[:, :1]).abs().max().item() < 1e-4
    assert scores[0].std(-1).min() > 1e-3                                # not trivially constant


def test_rope_tables_once_per_stage(monkeypatch):
    # Every RoPE table is built by ropevit.layers.rope_tables (attention only receives them).
    import ropevit.layers.rope_tables as rope_tables
    import ropevit.layers.swin_stage as swin_stage
    calls = []
    orig = rope_tables.rope_cos_sin
    monkeypatch.setattr(rope_tables, 'rope_cos_sin', lambda *a: calls.append('stage') or orig(*a))
    mask_calls = []
    orig_mask = swin_stage.shifted_window_mask
    monkeypatch.setattr(swin_stage, 'shifted_window_mask', lambda *a, **k: mask_calls.append(1) or orig_mask(*a, **k))
    x = torch.randn(2, 3, 64, 64)
    mixed = RoPESwin(arch=TINY, rope='mixed')
    mixed(x)
    assert calls == ['stage'] * 4 and len(mask_calls) == 2 * 4           # all blocks' tables in one call per stage
    calls.clear()
    mixed(x)
    assert calls == ['stage'] * 4                                        # learnable: rebuilt every forward
    calls.clear()
    axial = RoPESwin(arch=TINY, rope='axial')
    axial(x)
    axial(x)
    assert calls == ['stage'] * 4                                        # once per stage, then cached
    assert len(mask_calls) == 2 * 4 * 2                                  # masks: once per grid, both models


def test_masks_cached_for_the_last_grid_only(monkeypatch):
    import ropevit.layers.swin_stage as swin_stage
    built = []
    orig_mask = swin_stage.shifted_window_mask
    monkeypatch.setattr(swin_stage, 'shifted_window_mask', lambda *a, **k: built.append(a[0]) or orig_mask(*a, **k))
    model = RoPESwin(arch=TINY, rope='mixed', window_size=4).eval()
    big, small = torch.randn(1, 3, 72, 56), torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        ref_big, ref_small = model(big), model(small)
        assert len(built) == 2 * 2 * 4                                   # two grids, 2 masks x 4 stages each
        built.clear()
        again = model(small)
        assert built == []                                               # same grid: cached
        assert all(torch.equal(a, b) for a, b in zip(again, ref_small))
        again = model(big)
        assert len(built) == 2 * 4                                       # only the last grid is kept
        assert all(torch.equal(a, b) for a, b in zip(again, ref_big))
    # Masks made under inference_mode are kept apart from those a training step saves.
    with torch.inference_mode():
        model(small)
    model.train()
    sum(o.sum() for o in model(small)).backward()
    assert model.stages[0].blocks[0].attn.w_msa.qkv.weight.grad is not None
    # Another dtype (autocast) is another entry, in that dtype.
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model(small)
    masks = model.stages[0].attention_masks((10, 10), torch.device('cpu'), torch.bfloat16)
    assert masks[1] is not None and masks[1].dtype == torch.bfloat16


def test_kernels_per_forward_fewer_than_mmdet_swin():
    """A batch-1 GPU is launch-bound: RoPESwin (with RoPE, warm caches) must dispatch fewer
    kernels per forward than mmdet's SwinTransformer of the same depth."""
    from mmdet.models.backbones.swin import SwinTransformer
    from benchmarks.measure import kernel_ops
    ref = SwinTransformer(**TINY, drop_path_rate=0.0)
    ref.eval()                                  # mmdet's train() returns None
    x = torch.randn(1, 3, 64, 96)
    counts = {}
    with torch.no_grad():
        for name, m in [('mmdet', ref)] + [(r, RoPESwin(arch=TINY, rope=r, drop_path_rate=0.0).eval())
                                            for r in ('mixed', 'axial')]:
            m(x)
            counts[name] = kernel_ops(lambda m=m: m(x))
    assert counts['axial'] < counts['mixed'] < counts['mmdet'], counts


def test_stage_tables_equal_each_blocks_own():
    """The stage's one stacked rope_cos_sin call gives every mixed block exactly the table that
    block's own rope_freqs give, and gradients still reach each block's frequencies."""
    from ropevit.layers.rope_tables import build_rope_tables
    model = RoPESwin(arch=TINY, rope='mixed', window_size=4).eval()   # no drop-path draws
    st, hw = model.stages[1], (9, 7)
    x = torch.randn(2, hw[0] * hw[1], 64)
    masks = st.attention_masks(hw, x.device, x.dtype)
    ref = x
    for blk in st.blocks:
        own = build_rope_tables(blk.attn.w_msa.rope_freqs, grid_coords(4, 4))           # this block alone
        ref = blk(ref, hw, masks[blk.attn.shift_size > 0], own)
    out = st(x, hw)[2]                                                   # the stage's map before merging
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    out.square().sum().backward()
    assert all(blk.attn.w_msa.rope_freqs.grad.abs().sum() > 0 for blk in st.blocks)


# ----------------------------------------------------------------------------- window rule
def test_window_plan_per_grid():
    orig = RoPESwin(arch=TINY, window_size=7, window_rule='original')
    mmdet = RoPESwin(arch=TINY, window_size=7)
    st = orig.stages[3]
    assert st.window_plan((7, 7)) == (7, 0) and st.window_plan((5, 9)) == (5, 0)
    assert st.window_plan((8, 30)) == (7, 3)
    assert mmdet.stages[3].window_plan((7, 7)) == (7, 3) and mmdet.stages[3].window_plan((5, 9)) == (7, 3)


@pytest.mark.parametrize('rope,use_rpb', [('mixed', False), ('axial', False), ('none', True)])
def test_original_rule_caches_keyed_by_effective_window(rope, use_rpb):
    # 72x56 -> grids 18x14, 9x7, 5x4, 3x2 and 40x40 -> 10x10, 5x5, 3x3, 2x2 with ws=4: the
    # effective windows of stages 1-3 change between the two sizes; cached masks and RoPE
    # tables of one must not leak into the other.
    torch.manual_seed(0)
    model = RoPESwin(arch=TINY, rope=rope, use_rpb=use_rpb, window_size=4, window_rule='original').eval()
    fresh = RoPESwin(arch=TINY, rope=rope, use_rpb=use_rpb, window_size=4, window_rule='original').eval()
    fresh.load_state_dict(model.state_dict())
    big, small = torch.randn(1, 3, 72, 56), torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        model(big)
        got_small, got_big = model(small), model(big)
        exp_small = fresh(small)
        fresh2 = RoPESwin(arch=TINY, rope=rope, use_rpb=use_rpb, window_size=4, window_rule='original').eval()
        fresh2.load_state_dict(model.state_dict())
        exp_big = fresh2(big)
    assert all(torch.equal(a, b) for a, b in zip(got_small, exp_small))
    assert all(torch.equal(a, b) for a, b in zip(got_big, exp_big))
    assert all(key[1] == 2 for key in model.stages[3]._rope_cache.keys())   # 3x2 grid: window 2


def test_original_rule_compiles_as_one_graph():
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    model = RoPESwin(arch=dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)), rope='mixed',
                     window_size=4, window_rule='original', drop_path_rate=0.0)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    x = torch.randn(2, 3, 60, 92)                     # grids 15x23, 8x12, 4x6 (window 4, no shift), 2x3 (window 2)
    compiled(x)
    out = compiled(x)
    assert counter.frame_count == 1, counter.frame_count
    with torch.no_grad():
        ref = model(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out, ref))
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- shapes and options
@pytest.mark.parametrize('arch', list(SWIN_ARCHS))
def test_shapes_every_arch_odd_size(arch):
    model = RoPESwin(arch=arch, rope='mixed').eval()
    c = SWIN_ARCHS[arch]['embed_dims']
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 61, 93))
    assert [tuple(o.shape) for o in outs] == [(1, c, 16, 24), (1, 2 * c, 8, 12), (1, 4 * c, 4, 6),
                                              (1, 8 * c, 2, 3)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('size', [(1, 3, 17, 23), (2, 3, 33, 65), (1, 3, 4, 4)])
@pytest.mark.parametrize('rope', ['mixed', 'axial', 'none'])
def test_shapes_odd_sizes(size, rope):
    model = RoPESwin(arch=TINY, rope=rope, window_size=3, out_indices=(0, 2)).eval()
    with torch.no_grad():
        outs = model(torch.randn(size))
    h, w = -(-size[2] // 4), -(-size[3] // 4)
    assert tuple(outs[0].shape) == (size[0], 32, h, w)
    assert tuple(outs[1].shape[-2:]) == (-(-(-(-h // 2)) // 2), -(-(-(-w // 2)) // 2))


@pytest.mark.parametrize('kwargs,option', [
    (dict(rope='rotary'), 'rope'), (dict(arch='huge'), 'arch'), (dict(arch=dict(dims=3)), 'arch'),
    (dict(out_indices=(0, 4)), 'out_indices'), (dict(window_size=0), 'window_size'),
    (dict(embed_dims=30, num_heads=[5, 5, 5, 5]), 'head_dim'), (dict(num_heads=[3, 6, 12]), 'num_heads'),
    (dict(drop_path_rate=1.5), 'drop_path_rate'), (dict(frozen_stages=5), 'frozen_stages'),
    (dict(rope='axial', rope_theta=-1.0), 'rope_theta'), (dict(embed_dims=32, num_heads=[3, 6, 12, 24]), 'num_heads'),
    (dict(window_rule='microsoft'), "window_rule='microsoft'.*'mmdet', 'original'"),
])
def test_invalid_options_raise(kwargs, option):
    with pytest.raises(ValueError, match=option):
        RoPESwin(**kwargs)


def test_defaults():
    m = RoPESwin(arch=TINY)
    assert (m.rope_type, m.rope_theta, m.use_rpb, m.window_rule) == ('mixed', 10.0, False, 'mmdet')
    a = RoPESwin(arch=TINY, rope='axial')
    assert (a.rope_theta, a.use_rpb) == (50.0, False)
    assert RoPESwin(arch=TINY, rope='none').use_rpb
    keys = m.state_dict().keys()
    assert 'stages.0.blocks.1.attn.w_msa.rope_freqs' in keys
    assert m.stages[3].blocks[0].attn.w_msa.rope_freqs.shape == (2, 8, 32 // 2)   # 256 channels / 8 heads
    assert not any('axial_freqs' in k or 'relative_position' in k for k in a.state_dict())
    # explicit mmdet-style sizes override the preset
    s = RoPESwin(arch='tiny', depths=[2, 2, 18, 2])
    assert len(s.stages[2].blocks) == 18 and s.num_features == [96, 192, 384, 768]


def test_layer_ids():
    m = RoPESwin(arch=dict(embed_dims=32, depths=[2, 2, 3, 2], num_heads=[1, 2, 4, 8]))
    assert m.num_layers == 11
    ids = {n: m.get_layer_id(n) for n, _ in m.named_parameters()}
    assert ids['patch_embed.projection.weight'] == 0
    assert ids['stages.0.blocks.0.norm1.weight'] == 1
    assert ids['stages.1.blocks.1.attn.w_msa.rope_freqs'] == 4
    assert ids['stages.2.blocks.0.ffn.layers.0.0.weight'] == 5
    assert ids['stages.2.downsample.reduction.weight'] == 7          # with the stage's last block
    assert ids['stages.3.blocks.1.attn.w_msa.qkv.bias'] == 9
    assert ids['norm3.weight'] == m.num_layers - 1 == 10
    assert m.get_layer_id('backbone.stages.0.blocks.1.ffn.layers.1.weight') == 2
    assert set(ids.values()) == set(range(m.num_layers))
    with pytest.raises(ValueError, match='neck.lateral'):
        m.get_layer_id('neck.lateral.weight')


def test_frozen_stages():
    m = RoPESwin(arch=TINY, frozen_stages=2)
    m.train()
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert all(n.startswith(('patch_embed', 'stages.0', 'stages.1', 'norm0', 'norm1')) for n in frozen)
    assert any(n.startswith('stages.1.downsample') for n in frozen) and 'norm1.weight' in frozen
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith(('stages.2', 'norm2')))
    assert not m.stages[1].training and m.stages[2].training


def test_with_cp_same_gradients_and_freqs_learn():
    torch.manual_seed(1)
    a = RoPESwin(arch=TINY, drop_path_rate=0.0)
    b = RoPESwin(arch=TINY, drop_path_rate=0.0, with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 45, 37)
    for m in (a, b):
        sum(o.square().mean() for o in m(x)).backward()
    ga, gb = dict(a.named_parameters()), dict(b.named_parameters())
    for n in ga:
        assert torch.allclose(ga[n].grad, gb[n].grad, atol=1e-6), n
    assert ga['stages.2.blocks.1.attn.w_msa.rope_freqs'].grad.abs().sum() > 0


def test_autocast_bf16_finite():
    m = RoPESwin(arch=TINY).eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = m(torch.randn(1, 3, 45, 61))
    assert all(torch.isfinite(o.float()).all() for o in outs)
