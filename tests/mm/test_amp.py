"""Mixed precision on the CPU (bf16 autocast, what ``--amp`` turns on through MMEngine's AmpOptimWrapper).

The RoPE (cos, sin) tables must stay float32: angles reach ``x * f`` with x up to the grid size, and
bf16 keeps 8 mantissa bits, so a bf16 angle near 60 rad is off by up to 0.125 rad. The tests record
every table the backbone builds during a bf16-autocast forward/backward, and train through
MMEngine's AmpOptimWrapper with finite losses. The demo detector through ``tools/train.py --amp``
(run by tests/resume_driver.py, which records the tables) is the last CPU test of this file,
test_demo_detector_trains_with_amp_on_cpu; the CUDA variants at the end run only with a GPU.
"""
from __future__ import annotations

import math

import pytest
import torch

import ropevit.layers.rope_tables as rope_tables
import ropevit.layers.swin_attention as swin_attention
import ropevit.layers.swin_block as swin_block
import ropevit.layers.vit_rope as vit_rope
import ropevit.mm  # noqa: F401
from ropevit.layers.rope import axial_frequencies, grid_coords, init_mixed_frequencies, rope_cos_sin
from ropevit.mm import runtime
from ropevit.models.swin import RoPESwin
from ropevit.models.vit import RoPEViT

@pytest.fixture(autouse=True, scope='module')
def _cpu_amp_fix():
    """The runtime fix 'cpu_amp' (AmpOptimWrapper and mmcv's nms / roi_align on CPU-only machines),
    which ropevit's tools and configs turn on."""
    was_on = 'cpu_amp' in runtime.active()
    runtime.enable('cpu_amp')
    yield
    if not was_on:
        runtime.disable('cpu_amp')


TINY_SWIN = dict(embed_dims=32, depths=(2, 2), num_heads=(2, 4), window_size=4, out_indices=(0, 1),
                 drop_path_rate=0.0)


@pytest.fixture
def recorded_tables(monkeypatch):
    """Wrap rope_cos_sin where the backbone calls it; keep (dtype of cos, dtype of sin, autocast on?)."""
    seen: list[tuple[torch.dtype, torch.dtype, bool]] = []

    def recording(freqs, coords):
        cos, sin = rope_cos_sin(freqs, coords)
        seen.append((cos.dtype, sin.dtype, torch.is_autocast_enabled('cpu')))
        return cos, sin

    for mod in (rope_tables, swin_attention, swin_block, vit_rope):
        if hasattr(mod, 'rope_cos_sin'):
            monkeypatch.setattr(mod, 'rope_cos_sin', recording)
    return seen


def test_rope_tables_are_float32_under_bf16_autocast_and_accurate():
    coords = grid_coords(64, 64)                                   # x, y up to 63
    freqs = init_mixed_frequencies(32, 4, theta=100.0)             # [2, nh, 16]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cos, sin = rope_cos_sin(freqs, coords)
        cos_b, sin_b = rope_cos_sin(freqs.bfloat16(), coords.bfloat16())  # bf16 inputs as well
    angles64 = (coords.double()[:, 0, None] * freqs.double()[0].unsqueeze(-2)
                + coords.double()[:, 1, None] * freqs.double()[1].unsqueeze(-2))
    assert cos.dtype == sin.dtype == cos_b.dtype == torch.float32
    assert (cos.double() - angles64.cos()).abs().max() < 1e-4
    assert (sin.double() - angles64.sin()).abs().max() < 1e-4
    # What float32 buys: the same angles rounded to bf16 are wrong by a lot.
    wrong = angles64.to(torch.bfloat16).double()
    assert (wrong.cos() - angles64.cos()).abs().max() > 0.05


@pytest.mark.parametrize('rope', ['mixed', 'axial'])
def test_swin_bf16_autocast_keeps_rope_tables_float32(recorded_tables, rope):
    torch.manual_seed(0)
    model = RoPESwin(**TINY_SWIN, rope=rope)
    x = torch.randn(2, 3, 64, 48)
    ref = model(x)
    if rope == 'mixed':  # mixed tables are rebuilt every forward (learnable); axial ones are cached
        recorded_tables.clear()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
        loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    assert recorded_tables, 'no RoPE table was built'
    assert all(c == s == torch.float32 for c, s, _ in recorded_tables), recorded_tables
    if rope == 'mixed':
        assert all(on for _, _, on in recorded_tables)  # built inside the autocast region
    else:
        for stage in model.stages:  # the table the bf16 forward used
            table = stage._rope_cache.values()[-1]  # the most recently used entry
            assert table.cos.dtype == table.sin.dtype == torch.float32
    assert any(o.dtype == torch.bfloat16 for o in outs)  # autocast really ran in bf16
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for o, r in zip(outs, ref):  # bf16 result close to the float32 one
        assert (o.float() - r).abs().max() < 0.1 * r.abs().max()
    if rope == 'mixed':  # learnable frequencies stay float32 parameters with float32 grads
        f = model.stages[0].blocks[0].attn.w_msa.rope_freqs
        assert f.dtype == torch.float32 and f.grad is not None and f.grad.dtype == torch.float32


@pytest.mark.parametrize('rope', ['mixed', 'axial'])
def test_vit_bf16_autocast_keeps_rope_tables_float32(recorded_tables, rope):
    """RoPE-ViT with window blocks and a global block (two grids, two sets of tables)."""
    torch.manual_seed(0)
    model = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), patch_size=4, rope=rope,
                    with_cls_token=False, window_size=4, global_attn_indexes=(1,), out_indices=(1,))
    x = torch.randn(2, 3, 40, 24)
    ref = model(x)[0]
    if rope == 'mixed':
        recorded_tables.clear()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)[0]
        loss = out.float().pow(2).mean()
    loss.backward()
    assert recorded_tables and all(c == s == torch.float32 for c, s, _ in recorded_tables), recorded_tables
    assert math.isfinite(loss.item())
    # The final LayerNorm runs in float32 under autocast; bf16 matmuls before it show as a small error.
    err = (out.float() - ref).abs().max()
    assert 0 < err < 0.1 * ref.abs().max()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if rope == 'mixed':
        f = model.rope.freqs
        assert f.dtype == torch.float32 and f.grad is not None and f.grad.dtype == torch.float32


def test_axial_table_cache_is_float32_after_autocast_forward():
    """The axial table is cached across forwards: a bf16 forward must not leave a bf16 table for the
    next float32 forward (or the other way round)."""
    torch.manual_seed(0)
    model = RoPESwin(**TINY_SWIN, rope='axial').eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            model(x)
        again = model(x)
    for a, b in zip(ref, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert axial_frequencies(16).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason='with a GPU, AmpOptimWrapper autocasts CUDA (tested below)')
def test_amp_optim_wrapper_trains_on_cpu_with_finite_losses():
    """MMEngine's AmpOptimWrapper (what ``--amp`` selects) on the CPU: bf16 autocast, no CUDA GradScaler
    needed, finite losses that go down on a fixed batch."""
    from mmengine.optim import AmpOptimWrapper
    torch.manual_seed(0)
    model = RoPESwin(**TINY_SWIN)
    head = torch.nn.Linear(64, 1)
    params = list(model.parameters()) + list(head.parameters())
    wrapper = AmpOptimWrapper(optimizer=torch.optim.AdamW(params, lr=1e-3), loss_scale='dynamic')
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1.0, -1.0])
    losses = []
    for _ in range(4):
        with wrapper.optim_context(model):
            assert torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
            feat = model(x)[1].mean((2, 3))
            loss = (head(feat).squeeze(-1).float() - y).pow(2).mean()
        wrapper.update_params(loss)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert wrapper.state_dict()['loss_scaler'] == {}  # disabled scaler: nothing to resume


@pytest.mark.skipif(torch.cuda.is_available(), reason='the failure being fixed only exists without a GPU')
def test_plain_mmengine_amp_refuses_cpu_and_fp16_on_cpu_is_a_clear_error():
    from mmengine.optim import AmpOptimWrapper
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="dtype='float16' is not supported.*bfloat16"):
        AmpOptimWrapper(optimizer=opt, dtype='float16')
    runtime.disable('cpu_amp')
    try:
        with pytest.raises(AssertionError, match='only available training on gpu'):
            AmpOptimWrapper(optimizer=opt)
    finally:
        runtime.enable('cpu_amp')


def test_mmcv_ops_without_bf16_cpu_kernels_run_under_cpu_autocast():
    """mmcv's CPU nms/roi_align have no bf16 kernels (plain: "expected scalar type Float but found
    BFloat16" in the RPN); the runtime fix 'cpu_amp' (ropevit.mm.cpu_amp) runs them in float32 as autocast does for such ops."""
    import importlib

    from mmcv.ops import RoIAlign, batched_nms
    torch.manual_seed(0)
    xy = torch.rand(50, 2) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(50, 2) * 20], 1)
    scores, idxs = torch.rand(50), torch.randint(0, 3, (50,))
    ref_dets, ref_keep = batched_nms(boxes, scores, idxs, dict(type='nms', iou_threshold=0.5))
    feats = torch.randn(1, 8, 16, 16)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 12.0], [0, 4.0, 2.0, 15.0, 8.0]])
    align = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=0)
    ref_roi = align(feats, rois)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        dets, keep = batched_nms(boxes.bfloat16(), scores.bfloat16(), idxs, dict(type='nms', iou_threshold=0.5))
        roi = align(feats.bfloat16(), rois.bfloat16())
    assert roi.dtype == torch.bfloat16 and (roi.float() - ref_roi).abs().max() < 0.05
    assert dets.dtype == torch.bfloat16 and len(keep) > 0
    assert set(keep.tolist()) <= set(range(50)) and abs(len(keep) - len(ref_keep)) <= 2  # bf16 boxes
    runtime.disable('cpu_amp')
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16), pytest.raises(RuntimeError, match='BFloat16'):
            importlib.import_module('mmcv.ops.nms').nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
    finally:
        runtime.enable('cpu_amp')


def test_demo_detector_trains_with_amp_on_cpu(tmp_path):
    """tools/train.py --amp on the demo Mask R-CNN: AmpOptimWrapper with bf16 autocast on the CPU, 2
    iterations, finite losses, and every RoPE table built during training is float32."""
    import json

    import demo_helpers as demo
    data = demo.make_coco(tmp_path / 'data')
    config = demo.tiny_config(tmp_path, data, max_epochs=1)
    report = tmp_path / 'rope.txt'
    r = demo.train(config, tmp_path / 'work', amp=True, rope_report=report)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert 'AmpOptimWrapper' in log
    tables = report.read_text().splitlines()
    assert tables and all(line.split()[:2] == ['torch.float32', 'torch.float32'] for line in tables), tables
    assert any(line.endswith('True') for line in tables)  # built inside the autocast region
    scalars = next((tmp_path / 'work').rglob('scalars.json'))
    losses = [json.loads(line)['loss'] for line in scalars.read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses
    assert (tmp_path / 'work' / 'epoch_1.pth').exists()


# ------------------------------------------------------------------------------ on a GPU, when there is one
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (CI has none)')


@cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_autocast_keeps_rope_tables_float32(recorded_tables, dtype):
    torch.manual_seed(0)
    models = [RoPESwin(**TINY_SWIN, rope='mixed'), RoPESwin(**TINY_SWIN, rope='axial'),
              RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), patch_size=4, rope='mixed',
                      with_cls_token=False, window_size=4, global_attn_indexes=(1,), out_indices=(1,))]
    x = torch.randn(2, 3, 64, 48, device='cuda')
    for model in models:
        model.cuda()
        recorded_tables.clear()
        with torch.autocast('cuda', dtype=dtype):
            outs = model(x)
            loss = sum(o.float().pow(2).mean() for o in outs)
        loss.backward()
        assert recorded_tables and all(c == s == torch.float32 for c, s, _ in recorded_tables), recorded_tables
        assert math.isfinite(loss.item())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@cuda
def test_amp_optim_wrapper_on_cuda_is_mmengines_fp16_with_loss_scaling():
    """On a GPU ropevit.mm.cpu_amp steps aside: float16 autocast and a working GradScaler."""
    from mmengine.optim import AmpOptimWrapper
    torch.manual_seed(0)
    model, head = RoPESwin(**TINY_SWIN).cuda(), torch.nn.Linear(64, 1).cuda()
    wrapper = AmpOptimWrapper(optimizer=torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3))
    assert wrapper.loss_scaler.is_enabled() and wrapper.loss_scaler.get_scale() == 65536.0
    x, y = torch.randn(2, 3, 32, 32, device='cuda'), torch.tensor([1.0, -1.0], device='cuda')
    losses = []
    for _ in range(6):
        with wrapper.optim_context(model):
            assert torch.get_autocast_dtype('cuda') == torch.float16
            loss = (head(model(x)[1].mean((2, 3))).squeeze(-1).float() - y).pow(2).mean()
        wrapper.update_params(loss)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
