"""The benchmark harness (benchmarks/, ``python -m benchmarks``): its correctness checks
catch mismatches, the manual-softmax baseline is what it claims, memory accounting is
right on a known allocation, and the tables/ratios/plot are produced for tiny configs.
Nothing here asserts on timings."""
import importlib.util
import json
import os

import pytest
import torch
import torch.nn.functional as F

from benchmarks import attention as battn
from benchmarks.measure import ParityError, check_parity, max_abs_diff, peak_memory_bytes, time_group
from benchmarks.report import Results, Row, growth_exponent, ratios_table, rows_table
from benchmarks.runner import BenchConfig, Contender, Parity, run_group
from benchmarks.swap import swap_calls

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_SWIN = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
CPU = torch.device('cpu')


def _benchmark_cli():
    """``tools/benchmark.py``, the forwarder mm users run: its ``main`` is ``benchmarks.cli.main``."""
    from benchmarks import cli
    spec = importlib.util.spec_from_file_location('benchmark_cli', os.path.join(ROOT, 'tools', 'benchmark.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main is cli.main
    return mod


def _quiet_cfg(**kw) -> BenchConfig:
    return BenchConfig(device=CPU, warmup=0, reps=1, log=lambda m: None, **kw)


# ----------------------------------------------------------------------------- the baseline
@pytest.mark.parametrize('mask_kind', [None, 'bool', 'float'])
def test_manual_softmax_attention_equals_sdpa(mask_kind):
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    mask = None
    if mask_kind == 'bool':
        mask = torch.rand(2, 1, 10, 10) > 0.3
        mask[..., 0] = True                       # every query keeps one key
    elif mask_kind == 'float':
        mask = torch.randn(1, 3, 10, 10)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    got = battn.manual_softmax_attention(q, k, v, attn_mask=mask, scale=0.3)
    assert (expected - got).abs().max().item() < 1e-5


def test_swap_attention_reaches_ropevit_attention_and_is_undone():
    from ropevit.layers import swin_attention
    from ropevit.models.swin import RoPESwin
    model = RoPESwin(arch=TINY_SWIN, rope='mixed', drop_path_rate=0.0).eval()
    x = torch.randn(1, 3, 64, 64)
    functional_before = swin_attention.F
    with torch.no_grad():
        sdpa_out = model(x)
        with battn.swap_attention() as calls:
            manual_out = model(x)
        assert calls[0] == sum(TINY_SWIN['depths'])      # one call per block
        # a wrong attention function changes the result: the swap is really in effect
        with battn.swap_attention(lambda q, k, v, **kw: v):
            wrong_out = model(x)
    assert swin_attention.F is functional_before
    assert check_parity(sdpa_out, manual_out, atol=1e-5, what='manual vs sdpa') < 1e-5
    assert max_abs_diff(sdpa_out, wrong_out) > 1e-3


def test_swap_attention_without_target_module_raises():
    with pytest.raises(RuntimeError, match='cannot be built'):
        with battn.swap_attention(modules=('benchmarks.report',)):
            pass


# ----------------------------------------------------------------------------- measuring
def test_check_parity_catches_mismatch_nan_and_shape():
    a = [torch.zeros(2, 3), torch.ones(4)]
    assert check_parity(a, [t.clone() for t in a], atol=0.0, what='same') == 0.0
    with pytest.raises(ParityError, match='max abs diff 0.5'):
        check_parity(a, [a[0] + 0.5, a[1]], atol=1e-3, what='shifted')
    with pytest.raises(ParityError):
        check_parity(a[0], torch.full((2, 3), float('nan')), atol=1.0, what='nan')
    with pytest.raises(ParityError, match='shapes'):
        check_parity(a[0], torch.zeros(3, 2), atol=1.0, what='transposed')


def test_cpu_peak_memory_counts_a_known_allocation():
    def alloc():
        a = torch.empty(1024, 1024)               # 4 MiB
        b = torch.empty(512, 1024)                # +2 MiB while a is alive
        del a, b
        c = torch.empty(256, 1024)                # 1 MiB after both are freed
        return c.shape

    peak = peak_memory_bytes(alloc, device=CPU) / 2 ** 20
    assert 6.0 <= peak < 6.5


def test_kernel_ops_counts_computing_ops_not_views():
    from benchmarks.measure import kernel_ops
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert kernel_ops(lambda: (a + b).view(-1).relu()) == 2
    assert kernel_ops(lambda: a.t().reshape(-1).sum()) == 2            # flattening a transpose copies
    assert kernel_ops(lambda: a.transpose(0, 1)[1:].unsqueeze(0)) == 0
    assert kernel_ops(lambda: torch.promote_types(a.dtype, torch.bfloat16)) == 0


def test_time_group_structure():
    order = []
    calls = {'a': 0, 'b': 0}

    def make(name):
        def fn():
            calls[name] += 1
            order.append(name)
        return fn

    stats = time_group({'a': make('a'), 'b': make('b')}, warmup=2, reps=3)
    # 2 warm-up calls, then per round one Timer.blocked_autorange(min_run_time=0): its block-size
    # probe (one call) and one timed block of one call; rounds interleaved a, b, a, b, ...
    assert calls == {'a': 2 + 3 * 2, 'b': 2 + 3 * 2}
    assert order == ['a'] * 2 + ['b'] * 2 + (['a'] * 2 + ['b'] * 2) * 3
    assert set(stats) == {'a', 'b'} and all(s.reps == 3 and s.min <= s.median for s in stats.values())
    assert all(s.p25 <= s.median <= s.p75 for s in stats.values())
    with pytest.raises(ValueError):
        time_group({'a': make('a')}, reps=0)


def test_run_group_rows_parity_and_error():
    lin = torch.nn.Linear(3, 8)
    other = torch.nn.Linear(3, 8)
    other.load_state_dict(lin.state_dict())
    fwd = lambda m, x: m(x.flatten(2).transpose(1, 2))   # noqa: E731  [B, HW, 3] -> [B, HW, 8]
    res = Results()
    cfg = _quiet_cfg(modes=('fwd', 'fwd+bwd'))
    contenders = [Contender('ours', 'ropevit', lin, fwd), Contender('ref', 'timm', other, fwd)]
    rows = run_group(res, cfg, 'toy', contenders, (4, 4), parity=[Parity('ours', 'ref', 1e-6)])
    assert set(rows) == {(n, m, 'fp32') for n in ('ours', 'ref') for m in ('fwd', 'fwd+bwd')}
    assert rows[('ours', 'fwd', 'fp32')].parity.startswith('max abs diff 0.0e+00 vs ref')
    assert all(r.peak_mib is not None and r.peak_mib >= 0 for r in rows.values())
    with torch.no_grad():
        other.weight[0, 0] += 1.0
    with pytest.raises(ParityError, match='ours vs ref'):
        run_group(res, cfg, 'toy', contenders, (4, 4), parity=[Parity('ours', 'ref', 1e-6)])


def test_report_tables_and_ratios():
    from benchmarks.measure import TimeStats
    res = Results()
    a = res.add(Row('s', 'A', 'ropevit', (512, 512), 'fwd', 'fp32', TimeStats(10, 9, 11, 9, 3), 100.0))
    b = res.add(Row('s', 'B', 'timm', (512, 512), 'fwd', 'fp32', TimeStats(20, 19, 21, 19, 3), 400.0))
    c = res.add(Row('s', 'A', 'ropevit', (1024, 1024), 'fwd', 'fp32', TimeStats(40, 39, 41, 39, 3), 400.0))
    q = res.ratio('A / B time', a, b, target='<= 1.0', check=lambda v: v <= 1.0)
    m = res.ratio('A / B memory', a, b, quantity=lambda r: r.peak_mib)
    assert (q.value, q.holds, q.value_min, m.value, m.holds, m.value_min) == (0.5, True, 9 / 19, 0.25, None, None)
    assert res.ratio('missing', a, None) is None
    assert growth_exponent(a, c) == pytest.approx(1.0)
    table = rows_table(res.rows)
    assert table.count('\n') == 4 and '| 512x512 |' in table and '10.0 (9.0-11.0)' in table
    assert '| A / B time | 512x512 | fwd | fp32 | 0.500 | 0.474 | <= 1.0 | yes |' in ratios_table(res.ratios)
    md = res.markdown({'device': 'cpu'})
    assert '## s' in md and '## Ratios' in md and '- **device**: cpu' in md


# ----------------------------------------------------------------------------- suites end to end
def test_swin_suite_parity_check_catches_wrong_weights(monkeypatch):
    from benchmarks import suites
    from ropevit.checkpoint import swin as swin_ckpt
    convert = swin_ckpt.convert_swin_state_dict

    def off_by_a_bit(*args, **kwargs):
        sd = convert(*args, **kwargs)
        key = next(k for k in sd if k.endswith('attn.w_msa.qkv.weight'))
        sd[key] = sd[key] + 1e-2 * torch.randn_like(sd[key])   # (a constant would vanish after LayerNorm)
        return sd

    monkeypatch.setattr(swin_ckpt, 'convert_swin_state_dict', off_by_a_bit)
    with pytest.raises(ParityError, match='RoPESwin .* none \\+ bias table vs mmdet'):
        suites.swin_vs_mmdet(Results(), _quiet_cfg(memory=False), arch=TINY_SWIN, sizes=[(64, 64)],
                             ropes=('mixed',))


def test_cli_smoke_swin_writes_tables_ratios_and_plot(tmp_path, capsys):
    cli = _benchmark_cli()
    rc = cli.main(['--smoke', '--suites', 'swin', '--modes', 'fwd', '--swin-sizes', '64,64x96',
                   '--out', str(tmp_path)])
    assert rc == 0
    md = (tmp_path / 'benchmark.md').read_text()
    assert '## RoPESwin vs mmdet Swin' in md and md.strip() in capsys.readouterr().out   # printed too
    for label in ('mmdet Swin(d32) (bias table)', 'RoPESwin Swin(d32) none + bias table',
                  'Swin(d32) none + bias table, manual softmax (mmdet math)',
                  'RoPESwin Swin(d32) mixed (no table)', 'RoPESwin Swin(d32) axial (no table)'):
        assert md.count(f'| {label} |') == 2                      # one row per size
    assert 'max abs diff' in md and '## Ratios' in md
    assert '| RoPESwin Swin(d32) mixed (no table) / mmdet time | 64x96 | fwd | fp32 |' in md
    data = json.loads((tmp_path / 'benchmark.json').read_text())
    assert len(data['rows']) == 10 and data['environment']['threads'].startswith(str(torch.get_num_threads()))
    assert (tmp_path / 'benchmark.png').stat().st_size > 1000


def test_cli_rejects_bad_options():
    cli = _benchmark_cli()
    with pytest.raises(SystemExit):
        cli.main(['--suites', 'nope'])
    with pytest.raises(SystemExit):
        cli.main(['--sizes', '12x'])


# ----------------------------------------------------------------------------- RoPEViT suites
TINY_VIT = dict(embed_dims=64, depth=2, num_heads=2)


def _rotate_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Pair ``(2j, 2j+1)`` times the 2x2 rotation matrix, in float64 (independent of both kernels)."""
    pairs = x.double().unflatten(-1, (-1, 2))                                   # [..., N, P, 2]
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2).double()  # [..., N, P, 2, 2]
    return (rot @ pairs.unsqueeze(-1)).squeeze(-1).flatten(-2)                 # [..., N, hd]


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('per_head', [False, True])
def test_rope_kernel_equals_the_rotation_on_strided_qk(dtype, per_head):
    from ropevit.layers.rope import apply_rope
    qkv = torch.randn(2, 10, 3, 4, 16).to(dtype)                       # [B, N, 3, nh, hd] like a fused qkv
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)                       # strided [B, nh, N, hd] views
    ang = torch.randn(*((4,) if per_head else ()), 10, 8)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for x in (q, k, q[:, :, 1:]):                                        # odd offset after a prefix slice
        c, s = ang[..., -x.shape[2]:, :].cos(), ang[..., -x.shape[2]:, :].sin()
        expected = _rotate_reference(x, c, s)
        got = apply_rope(x, c, s)
        assert got.dtype == x.dtype and got.shape == x.shape
        assert (expected - got.double()).abs().max().item() <= tol


def test_apply_rope_gradients():
    from ropevit.layers.rope import apply_rope
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    ang = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: apply_rope(x, a.cos(), a.sin()), (x, ang))


def test_swap_calls_reaches_ropevit_attention():
    from ropevit.layers import rope
    from ropevit.models.vit import RoPEViT
    model = RoPEViT(arch=TINY_VIT, rope='axial', layer_scale_init_value=None).eval()   # LayerScale 1e-5 would hide it
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        base = model(x)
        with swap_calls(rope, 'apply_rope', lambda t, c, s, rot=None: t) as calls:  # "no rotation"
            unrotated = model(x)
    assert calls[0] == TINY_VIT['depth']                                  # q and k of every block, in one call
    assert max_abs_diff(base, unrotated) > 1e-4
    with torch.no_grad():
        assert max_abs_diff(base, model(x)) == 0.0                        # undone
    with pytest.raises(RuntimeError, match='no_such_function'):
        with swap_calls(rope, 'no_such_function', lambda: None):
            pass


def test_vit_suite_parity_check_catches_wrong_weights(monkeypatch):
    from benchmarks import suites
    from ropevit.checkpoint import vit as vit_ckpt
    convert = vit_ckpt.convert_vit_state_dict

    def off_by_a_bit(*args, **kwargs):
        sd = convert(*args, **kwargs)
        key = 'blocks.1.attn.proj.weight'       # inside a block: the suite's LayerScale must not hide it
        sd[key] = sd[key] + 1e-2 * torch.randn_like(sd[key])
        return sd

    monkeypatch.setattr(vit_ckpt, 'convert_vit_state_dict', off_by_a_bit)
    with pytest.raises(ParityError, match='RoPEViT-d64L2h2 mixed vs timm ViT-d64L2h2 mixed'):
        suites.vit_vs_timm(Results(), _quiet_cfg(memory=False), archs=[TINY_VIT], ropes=('mixed',),
                           sizes=[(32, 48)])


def test_vit_suites_rows_ratios_and_notes():
    from benchmarks import suites
    res = Results()
    cfg = _quiet_cfg(memory=False)
    suites.vit_vs_timm(res, cfg, archs=[TINY_VIT], ropes=('axial', 'none'), sizes=[(32, 48)])
    labels = {r.model for r in res.rows}
    assert labels == {'RoPEViT-d64L2h2 axial', 'timm ViT-d64L2h2 axial', 'RoPEViT-d64L2h2 none',
                      'timm ViT-d64L2h2 none'}
    assert all(r.parity and r.parity.startswith('max abs diff') for r in res.rows if r.impl != 'timm')
    names = {q.name for q in res.ratios}
    assert {'RoPEViT-d64L2h2 axial / timm time', 'RoPE overhead RoPEViT-d64L2h2 axial vs none (fraction)'} <= names
    # axial tables: built once in a cold forward, then served from the cache
    assert any('rope=axial' in n and 'called 1x in a first forward' in n and '0x in a second' in n
               for n in res.notes)

    suites.windowed_vit(res, cfg, arch=TINY_VIT, window_size=2, global_blocks=(1,), sizes=[(64, 64)])
    win = [r for r in res.rows if r.suite == 'windowed ViT']
    assert {r.impl for r in win} == {'ropevit', 'manual-softmax'} and len(win) == 5
    assert all(r.parity.startswith('max abs diff') for r in win if r.impl == 'manual-softmax')
    assert {'manual-softmax / RoPEViT windowed time (speed-up)',
            'RoPEViT windowed / all-global peak memory'} & {q.name for q in res.ratios}
