"""Result rows, ratios against the targets, markdown tables and the plot."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

from .measure import TimeStats

Size = tuple[int, int]


def size_str(size: Size) -> str:
    """``(H, W)`` -> ``'HxW'``."""
    return f'{size[0]}x{size[1]}'


@dataclass
class Row:
    """One measured configuration."""
    suite: str
    model: str            # what was run, e.g. 'RoPEViT-B mixed' or 'timm vit_base_patch16_rope_224'
    impl: str             # 'ropevit' | 'timm' | 'mmdet' | 'manual-softmax' | 'compiled'
    size: Size
    mode: str             # 'fwd' | 'fwd+bwd'
    dtype: str            # 'fp32' | 'bf16'
    time: TimeStats
    peak_mib: Optional[float] = None
    parity: Optional[str] = None     # e.g. 'max|diff| 3e-7 vs timm'
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.suite, self.model, self.size, self.mode, self.dtype)

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


@dataclass
class Ratio:
    """A ratio of two measured quantities, with the issue's target for it (if any)."""
    name: str
    size: Size
    mode: str
    dtype: str
    value: float
    target: str = ''                  # e.g. '<= 1.0'
    holds: Optional[bool] = None      # None: informational
    value_min: Optional[float] = None  # the same ratio from the fastest calls (time ratios only)


def _fmt_ms(t: TimeStats) -> str:
    return f'{t.median:.1f} ({t.p25:.1f}-{t.p75:.1f})'


def rows_table(rows: Sequence[Row]) -> str:
    """Markdown table of rows (median time with the inter-quartile range)."""
    lines = ['| suite | model | impl | input HxW | mode | dtype | time ms, median (IQR) | min ms | reps | peak MiB '
             '| check |',
             '|---|---|---|---|---|---|---:|---:|---:|---:|---|']
    for r in rows:
        mem = '' if r.peak_mib is None else f'{r.peak_mib:.0f}'
        lines.append(f'| {r.suite} | {r.model} | {r.impl} | {size_str(r.size)} | {r.mode} | {r.dtype} | '
                     f'{_fmt_ms(r.time)} | {r.time.min:.1f} | {r.time.reps} | {mem} | {r.parity or ""} |')
    return '\n'.join(lines)


def ratios_table(ratios: Sequence[Ratio]) -> str:
    """Markdown table of ratios with their target and whether it holds."""
    lines = ['| ratio | input HxW | mode | dtype | value (medians) | value (mins) | target | holds |',
             '|---|---|---|---|---:|---:|---|---|']
    for q in ratios:
        holds = '' if q.holds is None else ('yes' if q.holds else '**no**')
        vmin = '' if q.value_min is None else f'{q.value_min:.3f}'
        lines.append(f'| {q.name} | {size_str(q.size)} | {q.mode} | {q.dtype} | {q.value:.3f} | {vmin} | '
                     f'{q.target} | {holds} |')
    return '\n'.join(lines)


class Results:
    """All rows of one run, looked up by ``(suite, model, size, mode, dtype)``."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.ratios: list[Ratio] = []
        self.notes: list[str] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def get(self, suite: str, model: str, size: Size, mode: str, dtype: str) -> Optional[Row]:
        for r in self.rows:
            if r.key == (suite, model, size, mode, dtype):
                return r
        return None

    def ratio(self, name: str, num: Optional[Row], den: Optional[Row], *,
              quantity: Optional[Callable[[Row], Optional[float]]] = None,
              transform: Callable[[float], float] = lambda v: v, target: str = '',
              check: Optional[Callable[[float], bool]] = None) -> Optional[Ratio]:
        """Add ``transform(quantity(num) / quantity(den))`` (skipped when a row is missing).

        ``quantity`` defaults to the median time; then the ratio of the minimum times is
        added as ``value_min`` (on a shared machine noise only adds time). The target is
        checked on the medians.
        """
        if num is None or den is None:
            return None
        is_time = quantity is None
        quantity = quantity or (lambda r: r.time.median)
        a, b = quantity(num), quantity(den)
        if a is None or b is None or b == 0:
            return None
        value = transform(a / b)
        value_min = transform(num.time.min / den.time.min) if is_time and den.time.min > 0 else None
        q = Ratio(name, num.size, num.mode, num.dtype, value, target,
                  None if check is None else bool(check(value)), value_min)
        self.ratios.append(q)
        return q

    def markdown(self, header: dict[str, str]) -> str:
        parts = ['## Environment', '', *[f'- **{k}**: {v}' for k, v in header.items()], '']
        suites = list(dict.fromkeys(r.suite for r in self.rows))
        for s in suites:
            parts += [f'## {s}', '', rows_table([r for r in self.rows if r.suite == s]), '']
        if self.ratios:
            parts += ['## Ratios', '', ratios_table(self.ratios), '']
        if self.notes:
            parts += ['## Notes', '', *[f'- {n}' for n in self.notes], '']
        return '\n'.join(parts)

    def to_json(self, header: dict[str, str]) -> str:
        return json.dumps({'environment': header, 'rows': [asdict(r) for r in self.rows],
                           'ratios': [asdict(q) for q in self.ratios], 'notes': self.notes}, indent=1)


def growth_exponent(small: Row, large: Row) -> float:
    """``log(t_large / t_small) / log(px_large / px_small)``: 1 = linear in pixels, 2 = quadratic."""
    return math.log(large.time.median / small.time.median) / math.log(large.pixels / small.pixels)


def plot(results: Results, path: str, *, title: str, mode: str = 'fwd', dtype: Optional[str] = None) -> Optional[str]:
    """Time and peak memory against megapixels for one mode and dtype (default: fwd, the
    first dtype measured), one line per model, one row of two panels per suite.

    Returns the path written, or None when matplotlib is missing or nothing has two sizes.
    """
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results.rows if r.mode == mode]
    if dtype is None and rows:
        dtype = rows[0].dtype
    series: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.dtype == dtype:
            series.setdefault((r.suite, r.model), []).append(r)
    series = {k: sorted(v, key=lambda r: r.pixels) for k, v in series.items()
              if len({r.pixels for r in v}) >= 2}
    if not series:
        return None
    suites = list(dict.fromkeys(k[0] for k in series))
    fig, axes = plt.subplots(len(suites), 2, figsize=(15, 4.6 * len(suites)), squeeze=False)
    for i, suite in enumerate(suites):
        ax_t, ax_m = axes[i]
        for (s, model), rs in series.items():
            if s != suite:
                continue
            mpx = [r.pixels / 1e6 for r in rs]
            style = '--' if rs[0].impl in ('timm', 'mmdet', 'manual-softmax') else '-'
            ax_t.plot(mpx, [r.time.median for r in rs], style, marker='o', label=model)
            if all(r.peak_mib is not None for r in rs):
                ax_m.plot(mpx, [r.peak_mib for r in rs], style, marker='o', label=model)
        ax_t.set_title(f'{suite}: time, median ({mode}, {dtype})', fontsize=9)
        ax_t.set_ylabel('ms')
        ax_m.set_title(f'{suite}: peak extra memory ({mode}, {dtype})', fontsize=9)
        ax_m.set_ylabel('MiB')
        for ax in (ax_t, ax_m):
            ax.set_xlabel('input megapixels')
            ax.grid(alpha=0.3)
        if ax_t.lines:
            ax_m.legend(*ax_t.get_legend_handles_labels(), fontsize=7, loc='upper left',
                        bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(title + '  (dashed: timm / mmdet / manual-softmax references)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    return path


def load_json(path: str) -> tuple[Results, dict]:
    """Rebuild :class:`Results` (and the environment header) from a ``benchmark.json``."""
    with open(path) as f:
        data = json.load(f)
    res = Results()
    for r in data['rows']:
        r = dict(r)
        r['time'] = TimeStats(**r['time'])
        r['size'] = tuple(r['size'])
        res.rows.append(Row(**r))
    for q in data['ratios']:
        q = dict(q)
        q['size'] = tuple(q['size'])
        res.ratios.append(Ratio(**q))
    res.notes = list(data.get('notes', []))
    return res, data.get('environment', {})
