"""Window helpers: partition round trip, padding, and the (shifted) window masks checked
against their definition (shifted windows = windows offset by ``shift`` on the un-rolled
grid, cut at the borders; padded keys excluded)."""
import pytest
import torch

from ropevit.layers.window import (pad_to_multiple, shifted_window_mask, window_key_mask,
                                   window_partition, window_unpartition)


def test_partition_round_trip_and_padding():
    x = torch.randn(2, 13, 10, 5)
    xp, padded = pad_to_multiple(x, 4)
    assert padded == (16, 12) and xp.shape == (2, 16, 12, 5)
    assert xp[:, 13:].abs().sum() == 0 and xp[:, :, 10:].abs().sum() == 0
    win = window_partition(xp, 4)
    assert win.shape == (2 * 4 * 3, 16, 5)
    # window w of image b is row b * nW + w (windows and tokens row-major); w=4 is (1, 1)
    assert torch.equal(win[1 * 12 + 4], xp[1, 4:8, 4:8].reshape(16, 5))
    assert torch.equal(window_unpartition(win, 4, padded, (13, 10)), x)


def _reference_allowed(hw, ws, shift):
    """[nW, N, N] allowed pairs from the definition, on the rolled, partitioned grid."""
    h, w = hw
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    # original (un-rolled) coordinates of every rolled position
    rows = (torch.arange(hp) + shift) % hp
    cols = (torch.arange(wp) + shift) % wp
    r, c = torch.meshgrid(rows, cols, indexing='ij')                       # [Hp, Wp]
    grid = torch.stack([r, c], -1)[None].float()                           # [1, Hp, Wp, 2]
    win = window_partition(grid, ws).long()                                # [nW, N, 2] original coords
    group = torch.div(win - shift, ws, rounding_mode='floor')              # offset windows, no wrap
    same = (group[:, :, None, :] == group[:, None, :, :]).all(-1)          # [nW, N, N]
    real_key = (win[..., 0] < h) & (win[..., 1] < w)                       # [nW, N]
    return same & real_key[:, None, :]


@pytest.mark.parametrize('hw,ws,shift', [((8, 8), 4, 2), ((14, 14), 7, 3), ((13, 10), 4, 2),
                                         ((29, 45), 7, 3), ((9, 9), 7, 3), ((5, 11), 7, 0)])
def test_shifted_window_mask_matches_definition(hw, ws, shift):
    hp, wp = -(-hw[0] // ws) * ws, -(-hw[1] // ws) * ws
    mask = shifted_window_mask((hp, wp), ws, shift, hw)
    expected = _reference_allowed(hw, ws, shift)
    if mask is None:
        assert expected.all()
        return
    assert mask.shape == expected.shape
    assert torch.equal(mask == 0, expected)
    assert torch.isfinite(mask).all()          # a fully masked padding row stays finite


def test_shift_only_mask_matches_mmdet_region_rule():
    # hw=None (or padded_hw) masks only the cyclic shift, as mmdet's Swin does: the
    # pattern of allowed pairs equals mmdet's "-100 where region labels differ".
    ws, s, hp, wp = 7, 3, 14, 21
    mask = shifted_window_mask((hp, wp), ws, s)
    expected = _reference_allowed((hp, wp), ws, s)
    assert torch.equal(mask == 0, expected)
    assert shifted_window_mask((hp, wp), ws, 0) is None


def test_window_key_mask():
    assert window_key_mask((8, 12), 4) is None
    m = window_key_mask((6, 5), 4)                                # padded to 8 x 8: 4 windows
    assert m.shape == (4, 1, 1, 16)
    assert m[0].all()                                              # top-left window fully real
    assert m[3, 0, 0].view(4, 4)[:2, :1].all() and not m[3, 0, 0].view(4, 4)[2:].any()
