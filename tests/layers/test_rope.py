"""RoPE math against timm 1.0.31's implementation (which the published weights were
ported to), the relative-position law, dtypes under autocast and autograd."""
import math

import pytest
import torch
from timm.layers.pos_embed_sincos import (RotaryEmbeddingCat, apply_rot_embed_cat, get_mixed_freqs,
                                          get_mixed_grid, init_random_2d_freqs)

from ropevit.layers.rope import (apply_rope, axial_frequencies, check_rope_args, grid_coords,
                                 init_mixed_frequencies, rope_cos_sin)


def _interleave(t: torch.Tensor) -> torch.Tensor:
    return t.repeat_interleave(2, -1)


@pytest.mark.parametrize('hw', [(14, 14), (5, 9), (24, 13)])
@pytest.mark.parametrize('hd', [16, 64])
def test_axial_tables_equal_timm_naver_port(hw, hd):
    """timm's RoPE-Axial for the naver models: RotaryEmbeddingCat(in_pixels=False, 'xy', theta 100)."""
    timm_rope = RotaryEmbeddingCat(dim=hd, temperature=100.0, in_pixels=False, grid_indexing='xy')
    sin_t, cos_t = timm_rope.get_embed(shape=list(hw)).chunk(2, -1)       # [N, hd] interleaved
    cos, sin = rope_cos_sin(axial_frequencies(hd, 100.0), grid_coords(*hw))  # [N, hd/2]
    assert torch.equal(_interleave(cos), cos_t) and torch.equal(_interleave(sin), sin_t)


def test_axial_layout_x_pairs_then_y_pairs():
    hd = 16
    f = axial_frequencies(hd, 100.0)
    assert f.shape == (2, hd // 2)
    mag = 1 / 100.0 ** (torch.arange(0, hd, 4)[: hd // 4].float() / hd)
    assert torch.equal(f[0, : hd // 4], mag) and torch.equal(f[1, hd // 4:], mag)
    assert (f[0, hd // 4:] == 0).all() and (f[1, : hd // 4] == 0).all()
    c = grid_coords(2, 3)  # x = column, y = row, row-major
    assert c.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


def test_mixed_init_and_tables_equal_timm():
    depth, nh, hd, hw = 3, 2, 16, (6, 5)
    torch.manual_seed(3)
    ref = init_random_2d_freqs(hd, depth, nh, temperature=10.0)
    torch.manual_seed(3)
    ours = init_mixed_frequencies(hd, nh, depth, 10.0)
    assert ours.shape == (2, depth, nh, hd // 2)
    assert torch.equal(ours, ref)
    # Orthogonal directions with the axial magnitudes.
    fx, fy = ours[0], ours[1]
    mag = torch.hypot(fx, fy)
    torch.testing.assert_close(mag[..., : hd // 4], mag[..., hd // 4:])
    dot = fx[..., : hd // 4] * fx[..., hd // 4:] + fy[..., : hd // 4] * fy[..., hd // 4:]
    assert dot.abs().max() < 1e-6
    t_x, t_y = get_mixed_grid(list(hw), grid_indexing='xy')
    sin_t, cos_t = get_mixed_freqs(ref, t_x, t_y).chunk(2, -1)            # [depth, nh, N, hd]
    cos, sin = rope_cos_sin(ours, grid_coords(*hw))                         # [depth, nh, N, hd/2]
    assert torch.equal(_interleave(cos), cos_t) and torch.equal(_interleave(sin), sin_t)


def test_apply_rope_equals_timm_rotation():
    x = torch.randn(2, 3, 20, 16)
    ang = torch.randn(3, 20, 8)
    emb = torch.cat([_interleave(ang.sin()), _interleave(ang.cos())], -1)
    assert torch.equal(apply_rope(x, ang.cos(), ang.sin()), apply_rot_embed_cat(x, emb))


@pytest.mark.parametrize('kind', ['axial', 'mixed'])
def test_scores_depend_only_on_offset(kind):
    """q.k after rotation is unchanged when all coordinates move by the same vector."""
    hd, nh, n = 16, 2, 12
    freqs = axial_frequencies(hd, 100.0) if kind == 'axial' else init_mixed_frequencies(hd, nh, theta=10.0)
    coords = torch.randint(0, 20, (n, 2)).float()
    q, k = torch.randn(1, nh, n, hd), torch.randn(1, nh, n, hd)

    def scores(c):
        cos, sin = rope_cos_sin(freqs, c)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    base = scores(coords)
    for shift in ([3.0, 0.0], [0.0, -7.0], [5.0, 11.0]):
        torch.testing.assert_close(scores(coords + torch.tensor(shift)), base, atol=1e-4, rtol=1e-5)
    # ... and does change when only one token moves (the law is not vacuous).
    moved = coords.clone()
    moved[0] += 1
    assert (scores(moved) - base).abs().max() > 1e-3


def test_tables_float32_under_autocast_and_rotation_in_input_dtype():
    freqs = init_mixed_frequencies(16, 2, theta=10.0)
    coords = grid_coords(8, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cos, sin = rope_cos_sin(freqs, coords * 1.0)
        out = apply_rope(torch.randn(1, 2, 64, 16, dtype=torch.bfloat16), cos, sin)
    assert cos.dtype == sin.dtype == torch.float32
    assert out.dtype == torch.bfloat16
    exact = (coords[:, :1] * freqs[0].double().unsqueeze(-2) + coords[:, 1:] * freqs[1].double().unsqueeze(-2))
    assert (cos.double() - exact.cos()).abs().max() < 1e-5


def test_rotation_out_of_place_and_gradients_reach_frequencies():
    freqs = init_mixed_frequencies(16, 2, theta=10.0).requires_grad_()
    q = torch.randn(1, 2, 9, 16, requires_grad=True)
    q_before = q.detach().clone()
    cos, sin = rope_cos_sin(freqs, grid_coords(3, 3))
    rotated = apply_rope(q[:, :, 1:], cos[:, :8], sin[:, :8])   # a slice, as for prefix tokens
    # A random projection: |rotated|^2 would not depend on the angles (rotations keep norms).
    (rotated * torch.randn_like(rotated)).sum().backward()
    assert torch.equal(q.detach(), q_before)
    assert freqs.grad is not None and freqs.grad.abs().sum() > 0
    assert q.grad is not None and q.grad[:, :, 0].abs().sum() == 0


def test_rotation_preserves_norm():
    x = torch.randn(2, 2, 10, 16)
    cos, sin = rope_cos_sin(axial_frequencies(16), grid_coords(2, 5))
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_check_rope_args_errors():
    with pytest.raises(ValueError, match='rope='):
        check_rope_args('cat', 16)
    with pytest.raises(ValueError, match='head_dim'):
        check_rope_args('axial', 18)
    check_rope_args('none', 18)
    assert math.isclose(axial_frequencies(8, 100.0)[0, 1].item(), 100 ** -0.5, rel_tol=1e-6)


def test_precomputed_rotation_gives_the_same_numbers():
    """``rot = rope_rotation(cos, sin)`` made once per table gives exactly what apply_rope
    computes from cos/sin; a rotation of too low a precision (float64 q/k) is not used."""
    from ropevit.layers.rope import rope_rotation
    cos, sin = rope_cos_sin(init_mixed_frequencies(16, 3), grid_coords(4, 5))   # [3, 20, 8]
    rot = rope_rotation(cos, sin)
    assert rot.dtype == torch.complex64 and rot.shape == cos.shape
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 3, 20, 16).to(dtype)
        assert torch.equal(apply_rope(x, cos, sin, rot), apply_rope(x, cos, sin))
    x64 = torch.randn(2, 3, 20, 16, dtype=torch.float64)
    assert torch.equal(apply_rope(x64, cos, sin, rot), apply_rope(x64, cos, sin))
    assert not torch.equal(apply_rope(x64, cos, sin, rot), apply_rope(x64.float(), cos, sin, rot).double())
