"""RoPE coordinate rules (``rope_coords``) of RoPEViT and RoPESwin, against float64 references written
here from the definitions (patch index; index * R / W; 2 pi (2 (i + 0.5) / W - 1)).

What is proven:
- ``'index'`` is today's model: the same outputs, bit for bit, as a model built without the option;
- every rule's tables equal the float64 reference on non-square grids, with class-token identity rows;
- ``'interpolate'`` at the reference grid is ``'index'`` (whole ViT and Swin outputs, bit for bit), and
  differs elsewhere; ``'normalized'`` tables are the same at matched relative positions of grids 3x apart;
- window blocks (padded, masked) equal attention over each window's real tokens with the reference
  tables of the *whole grid's* coordinates, for every rule; Swin windows use the step of the stage grid;
- the DINOv3-style augmentation acts in training mode only, as ``u <- (u + s) * f`` with ``f`` and ``s``
  in their ranges, a new draw per forward, and gradients flow;
- ``torch.compile`` gives the eager outputs; bad options are clear errors naming the value.
"""
from __future__ import annotations

import math

import pytest
import torch

from ropevit.layers.rope_tables import RopeTables
from ropevit.models.swin import RoPESwin
from ropevit.models.vit import RoPEViT

ARCH = dict(embed_dims=32, num_heads=2, depth=2)    # head dim 16: 4 x-pairs, 4 y-pairs
MODES = ('index', 'interpolate', 'normalized')


# ---------------------------------------------------------------- float64 references (no ropevit)

def ref_axis(n: int, mode: str, ref: float | None = None) -> torch.Tensor:
    """Coordinates of the ``n`` patches of one axis, float64."""
    i = torch.arange(n, dtype=torch.float64)
    if mode == 'index':
        return i
    if mode == 'interpolate':
        return i * ref / n
    return 2 * math.pi * (2 * (i + 0.5) / n - 1)


def ref_grid(h: int, w: int, mode: str, ref_hw: tuple[float, float] | None = None) -> torch.Tensor:
    """``[h*w, 2]`` (x, y) in row-major token order."""
    ys = ref_axis(h, mode, None if ref_hw is None else ref_hw[0])
    xs = ref_axis(w, mode, None if ref_hw is None else ref_hw[1])
    return torch.stack([xs.repeat(h), ys.repeat_interleave(w)], -1)


def ref_axial_angles(coords: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """``[N, hd/2]``: pairs ``k < hd/4`` turn by ``x / theta^(4k/hd)``, the rest by ``y`` (same magnitudes)."""
    k = torch.arange(head_dim // 4, dtype=torch.float64)
    mag = theta ** (-4 * k / head_dim)
    return torch.cat([coords[:, :1] * mag, coords[:, 1:] * mag], -1)


def ref_mixed_angles(coords: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``[nh, N, hd/2]`` = ``x * fx + y * fy`` for one block's ``freqs [2, nh, hd/2]``."""
    f = freqs.detach().double()
    return coords[None, :, :1] * f[0][:, None] + coords[None, :, 1:] * f[1][:, None]


def ref_tables_vit(m: RoPEViT, hw: tuple[int, int], mode: str, block: int, npt: int = 0) -> tuple:
    coords = ref_grid(*hw, mode, None if m.rope_ref_size is None else (m.rope_ref_size[0] / m.patch_size,
                                                                      m.rope_ref_size[1] / m.patch_size))
    hd = m.embed_dims // m.num_heads
    ang = ref_axial_angles(coords, hd, m.rope_theta) if m.rope_type == 'axial' else \
        ref_mixed_angles(coords, m.rope.freqs[:, block])
    pad = [0, 0, npt, 0] + [0] * (ang.dim() - 2) * 2
    ang = torch.nn.functional.pad(ang, pad)                        # prefix rows: angle 0
    return ang.cos(), ang.sin()


def sharpen(m: torch.nn.Module) -> torch.nn.Module:
    """Scale every qkv projection up: with the from-scratch init (std 0.02) attention is nearly
    uniform and position encodings would barely change the outputs."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith('qkv.weight'):
                p.mul_(15)
    return m


def _vit(mode: str, rope: str = 'axial', **kw) -> RoPEViT:
    torch.manual_seed(0)
    kw.setdefault('with_cls_token', False)
    return sharpen(RoPEViT(arch=ARCH, patch_size=8, pretrain_img_size=kw.pop('pretrain_img_size', 48), rope=rope,
                           rope_coords=mode, layer_scale_init_value=0.5, **kw).eval())


# ---------------------------------------------------------------- 'index' is today's model

@pytest.mark.parametrize('rope', ['axial', 'mixed'])
def test_index_is_the_default_model_bit_for_bit(rope):
    torch.manual_seed(0)
    default = RoPEViT(arch=ARCH, patch_size=8, rope=rope, window_size=3, global_attn_indexes=(1,),
                      with_cls_token=False, layer_scale_init_value=0.5).eval()
    explicit = RoPEViT(arch=ARCH, patch_size=8, rope=rope, window_size=3, global_attn_indexes=(1,),
                       with_cls_token=False, layer_scale_init_value=0.5, rope_coords='index').eval()
    explicit.load_state_dict(default.state_dict())
    swin_a = RoPESwin(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(2, 4)), rope=rope, window_size=3, out_indices=(0, 1)).eval()
    swin_b = RoPESwin(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(2, 4)), rope=rope, window_size=3, out_indices=(0, 1),
                      rope_coords='index').eval()
    swin_b.load_state_dict(swin_a.state_dict())
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(default(x)[0], explicit(x)[0])
        assert all(torch.equal(a, b) for a, b in zip(swin_a(x), swin_b(x)))


# ---------------------------------------------------------------- tables vs the references

@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('rope', ['axial', 'mixed'])
def test_global_tables_equal_the_reference_with_class_token_identity_rows(mode, rope):
    m = _vit(mode, rope, with_cls_token=True, rope_ref_size=(40, 56) if mode == 'interpolate' else None)
    hw = (5, 7)
    tables = m._rope_tables(hw, torch.device('cpu'))
    for b in range(m.depth):
        cos, sin = ref_tables_vit(m, hw, mode, b, npt=1)
        torch.testing.assert_close(tables[b].cos.double(), cos, atol=2e-6, rtol=0)
        torch.testing.assert_close(tables[b].sin.double(), sin, atol=2e-6, rtol=0)
        assert (tables[b].cos[..., 0, :] == 1).all() and (tables[b].sin[..., 0, :] == 0).all()


@pytest.mark.parametrize('rope', ['axial', 'mixed'])
@pytest.mark.parametrize('kw', [dict(with_cls_token=True), dict(window_size=3, global_attn_indexes=(1,))])
def test_interpolate_at_the_reference_grid_is_index_and_differs_elsewhere(rope, kw):
    idx, itp = _vit('index', rope, **kw), _vit('interpolate', rope, **kw)      # reference: pretrain_img_size 48
    itp.load_state_dict(idx.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 48, 48)
        assert torch.equal(idx(x)[0], itp(x)[0])
        x = torch.randn(1, 3, 48, 96)                                           # 6x12: x steps 1/2
        assert (idx(x)[0] - itp(x)[0]).abs().max() > 1e-3


def test_swin_interpolate_at_the_reference_size_is_index():
    arch = dict(embed_dims=16, depths=(2, 2), num_heads=(2, 4))
    kw = dict(arch=arch, rope='axial', window_size=3, out_indices=(0, 1))
    idx = sharpen(RoPESwin(**kw).eval())
    itp = RoPESwin(**kw, rope_coords='interpolate', rope_ref_size=(48, 64)).eval()
    itp.load_state_dict(idx.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 48, 64)
        assert all(torch.equal(a, b) for a, b in zip(idx(x), itp(x)))
        x = torch.randn(1, 3, 96, 64)
        assert (idx(x)[-1] - itp(x)[-1]).abs().max() > 1e-3


@pytest.mark.parametrize('rope', ['axial', 'mixed'])
def test_normalized_tables_match_at_the_same_relative_positions_of_a_3x_grid(rope):
    m = _vit('normalized', rope)
    small = m._rope_tables((4, 5), torch.device('cpu'))[0]
    large = m._rope_tables((12, 15), torch.device('cpu'))[0]
    # patch centre (i + 0.5) / 4 equals (3i + 1 + 0.5) / 12: token (r, c) <-> (3r + 1, 3c + 1)
    rows = torch.tensor([(3 * r + 1) * 15 + 3 * c + 1 for r in range(4) for c in range(5)])
    torch.testing.assert_close(large.cos[..., rows, :], small.cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(large.sin[..., rows, :], small.sin, atol=1e-6, rtol=0)
    idx = _vit('index', rope)
    idx.load_state_dict(m.state_dict())
    assert (idx._rope_tables((12, 15), torch.device('cpu'))[0].cos[..., rows, :] - small.cos).abs().max() > 0.1


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('rope', ['axial', 'mixed'])
def test_window_block_equals_rope_on_whole_grid_coordinates_restricted_to_each_window(mode, rope):
    """Block 0 windowed (ws 3 on a 5x7 grid: padded and masked), block 1 global. Reference: block 0
    as plain attention over each window's real tokens with the reference tables of those tokens'
    coordinates on the *whole* 5x7 grid; block 1 over the whole grid."""
    m = _vit(mode, rope, window_size=3, global_attn_indexes=(1,), final_norm=False,
             rope_ref_size=(24, 32) if mode == 'interpolate' else None)
    x = torch.randn(2, 3, 40, 56)
    H, W, ws = 5, 7, 3
    with torch.no_grad():
        (out,) = m(x)
        tok = m.patch_embed.proj(x).flatten(2).transpose(1, 2)              # [B, 35, C]
        blk0 = m.blocks[0]
        blk0.window_size = 0
        cos0, sin0 = (t.float() for t in ref_tables_vit(m, (H, W), mode, 0))
        ref = torch.empty_like(tok)
        for r0 in range(0, H, ws):
            for c0 in range(0, W, ws):
                idx = torch.tensor([r * W + c for r in range(r0, min(r0 + ws, H)) for c in range(c0, min(c0 + ws, W))])
                ref[:, idx] = blk0(tok[:, idx], (1, len(idx)), RopeTables(cos0[..., idx, :], sin0[..., idx, :]))
        blk0.window_size = ws
        cos1, sin1 = (t.float() for t in ref_tables_vit(m, (H, W), mode, 1))
        ref = m.blocks[1](ref, (H, W), RopeTables(cos1, sin1))
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(2, 32, H, W), atol=2e-5, rtol=0)


@pytest.mark.parametrize('mode', ['interpolate', 'normalized'])
def test_swin_windows_use_the_step_of_each_stage_grid(mode):
    """Axial Swin: a stage's window tables are the local indices times the reference step of the
    stage's whole (unpadded) grid: x step R / W ('interpolate'), 4 pi / W ('normalized')."""
    m = RoPESwin(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(2, 4)), rope='axial', window_size=3,
                 out_indices=(0, 1), rope_coords=mode, rope_ref_size=64).eval()
    seen = {}
    for i, stage in enumerate(m.stages):
        orig = stage.block_tables

        def spy(device, ws=None, cmap=None, _orig=orig, _i=i):
            seen[_i] = tables = _orig(device, ws, cmap)
            return tables
        stage.block_tables = spy
    with torch.no_grad():
        m(torch.randn(1, 3, 40, 72))                                         # stage grids 10x18 (padded 12x18), 5x9
    for i, (h, w) in enumerate([(10, 18), (5, 9)]):
        step = (lambda n, r: r / n) if mode == 'interpolate' else (lambda n, r: 4 * math.pi / n)
        ref = 64 / (4 * 2 ** i)
        local = torch.stack([torch.arange(3, dtype=torch.float64).repeat(3) * step(w, ref),
                             torch.arange(3, dtype=torch.float64).repeat_interleave(3) * step(h, ref)], -1)
        hd = m.num_features[i] // m.stages[i].blocks[0].attn.w_msa.num_heads
        ang = ref_axial_angles(local, hd, 50.0)
        torch.testing.assert_close(seen[i][0].cos.double(), ang.cos(), atol=2e-6, rtol=0)
        torch.testing.assert_close(seen[i][0].sin.double(), ang.sin(), atol=2e-6, rtol=0)


# ---------------------------------------------------------------- augmentation

def _x_angles_over_2pi(tables: RopeTables, m: RoPEViT) -> torch.Tensor:
    """Recover ``x`` / (2 pi) per token from the slowest x pair (its angle stays inside (-pi, pi))."""
    hd = m.embed_dims // m.num_heads
    k = hd // 4 - 1
    mag = m.rope_theta ** (-4 * k / hd)
    return torch.atan2(tables.sin[:, k].double(), tables.cos[:, k].double()) / mag / (2 * math.pi)


def test_normalized_augmentation_only_in_training_and_within_its_ranges():
    m = _vit('normalized', 'axial', rope_coords_aug=dict(shift=0.1, rescale=2.0))
    hw, dev = (4, 6), torch.device('cpu')
    u = (2 * (torch.arange(6, dtype=torch.float64) + 0.5) / 6 - 1).repeat(4)   # x of the tokens
    m.eval()
    torch.testing.assert_close(_x_angles_over_2pi(m._rope_tables(hw, dev)[0], m), u, atol=1e-5, rtol=0)
    m.train()
    draws = []
    for _ in range(4):
        x = _x_angles_over_2pi(m._rope_tables(hw, dev)[0], m)
        f = (x[1] - x[0]) / (u[1] - u[0])                                      # x = (u + s) * f
        s = x[0] / f - u[0]
        torch.testing.assert_close(x, (u + s) * f, atol=1e-5, rtol=0)          # affine in u
        assert 0.5 - 1e-6 <= f <= 2 + 1e-6 and abs(s) <= 0.1 + 1e-6
        draws.append(round(float(f), 6))
    assert len(set(draws)) == 4                                                # a fresh draw per forward
    m(torch.randn(1, 3, 32, 48))[0].sum().backward()
    assert m.patch_embed.proj.weight.grad.abs().sum() > 0                      # gradients reach the stem


@pytest.mark.parametrize('kw,match', [
    (dict(rope_coords='global'), "rope_coords='global'.*'index', 'interpolate', 'normalized'"),
    (dict(rope_coords='index', rope_coords_aug=dict(rescale=2.0)), "needs rope_coords='normalized'"),
    (dict(rope_coords='normalized', rope_coords_aug=dict(scale=2.0)), r"unknown keys \['scale'\]"),
    (dict(rope_coords='normalized', rope_coords_aug=dict(jitter=0.5)), 'jitter=0.5 must be >= 1'),
    (dict(rope_coords='interpolate', rope_ref_size=-4), 'rope_ref_size=-4'),
])
@pytest.mark.parametrize('cls', [RoPEViT, RoPESwin])
def test_bad_coordinate_options_name_the_value(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(rope='axial', **kw, **({} if cls is RoPEViT else dict(out_indices=(0,))))


# ---------------------------------------------------------------- torch.compile

def test_compiled_models_equal_eager_for_every_rule_and_size():
    torch._dynamo.reset()
    cases = [_vit('normalized', 'mixed', window_size=3, global_attn_indexes=(1,)),
             _vit('interpolate', 'axial', with_cls_token=True)]
    for m in cases:
        compiled = torch.compile(m, backend='inductor')
        with torch.no_grad():
            for size in ((40, 56), (48, 48)):
                x = torch.randn(1, 3, *size)
                torch.testing.assert_close(compiled(x)[0], m(x)[0], atol=1e-5, rtol=0)
