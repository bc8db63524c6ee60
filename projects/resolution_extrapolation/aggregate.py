"""Combine the ``results.json`` of several sweeps (e.g. one per training seed) into one table of
mean ± standard deviation and one plot with a band per model.

    python projects/resolution_extrapolation/aggregate.py work_dirs/resolution_extrapolation/seed*/results.json \\
        --out-dir projects/resolution_extrapolation
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np

from ropevit.fileio import atomic_target, atomic_write


def load(paths: list[str]) -> tuple[str, list[float], list[str], np.ndarray]:
    """metric, scales, columns and values ``[runs, columns, scales]``; all runs must share them."""
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    if not runs:
        raise ValueError('no results.json given')
    first = runs[0]
    for p, r in zip(paths, runs):
        if (r['metric'], r['scales'], r['columns']) != (first['metric'], first['scales'], first['columns']):
            raise ValueError(f'{p}: metric/scales/columns {r["metric"], r["scales"], r["columns"]} differ from '
                             f'{paths[0]}: {first["metric"], first["scales"], first["columns"]}')
    values = np.array([[r['values'][c] for c in first['columns']] for r in runs], dtype=float)
    return first['metric'], first['scales'], first['columns'], values


def to_markdown(metric: str, scales: list[float], columns: list[str], values: np.ndarray, *,
                row_header: str = 'test scale', control: Optional[str] = None,
                pairs: Sequence[tuple[str, str]] = ()) -> str:
    """Mean ± sample std per scale, the change vs 1x, (with ``control``) every column's margin
    over the control column at 1x, and (``pairs``) ``A - B`` per seed at every scale: mean ± std of
    the per-seed differences and on how many seeds ``A`` is ahead."""
    mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])
    head = f'| {row_header} | ' + ' | '.join(columns) + ' |'
    rows = [f'_{metric}, mean ± std over {len(values)} training seed(s)_', '',
            head, '|---:|' + '---:|' * len(columns)]
    for j, s in enumerate(scales):
        rows.append(f'| {s:g}x | ' + ' | '.join(f'{mean[i, j]:.1f} ± {std[i, j]:.1f}' for i in range(len(columns)))
                    + ' |')
    # drop relative to the training scale (1x), per seed, then averaged
    if 1.0 in scales:
        k = scales.index(1.0)
        rel = values - values[:, :, k:k + 1]
        rows += ['', f'_change vs. 1x ({metric} points), mean over seeds_', '',
                 head, '|---:|' + '---:|' * len(columns)]
        for j, s in enumerate(scales):
            rows.append(f'| {s:g}x | ' + ' | '.join(f'{rel[:, i, j].mean():+.1f}' for i in range(len(columns))) + ' |')
        if control is not None:
            if control not in columns:
                raise ValueError(f'control column {control!r} is not among {columns}')
            margin = values[:, :, k] - values[:, columns.index(control), k][:, None]     # [runs, columns]
            spread = margin.std(0, ddof=1) if len(values) > 1 else np.zeros(len(columns))
            others = [i for i, c in enumerate(columns) if c != control]
            rows += ['', f'_margin over {control} at 1x ({metric} points, paired by seed): mean ± std, min_', '',
                     '| | ' + ' | '.join(columns[i] for i in others) + ' |', '|---:|' + '---:|' * len(others),
                     '| margin | ' + ' | '.join(f'{margin[:, i].mean():+.1f} ± {spread[i]:.1f}, min {margin[:, i].min():+.1f}'
                                              for i in others) + ' |']
    for a, b in pairs:
        if a not in columns or b not in columns:
            raise ValueError(f'pair ({a!r}, {b!r}): both must be among {columns}')
    if pairs:
        rows += ['', f'_paired differences A − B ({metric} points, per seed): mean ± std (seeds where A is ahead)_', '',
                 f'| {row_header} | ' + ' | '.join(f'{a} − {b}' for a, b in pairs) + ' |',
                 '|---:|' + '---:|' * len(pairs)]
        for j, s in enumerate(scales):
            cells = []
            for a, b in pairs:
                d = values[:, columns.index(a), j] - values[:, columns.index(b), j]
                sd = d.std(ddof=1) if len(d) > 1 else 0.0
                cells.append(f'{d.mean():+.1f} ± {sd:.1f} ({int((d > 0).sum())}/{len(d)})')
            rows.append(f'| {s:g}x | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows) + '\n'


def plot_vs_scale(path: str, scales: Sequence[float], lines: dict[str, Sequence[float]], *, ylabel: str,
                  title: str, xlabel: str = 'test scale (× training resolution)',
                  bands: Optional[dict[str, tuple[Sequence[float], Sequence[float]]]] = None,
                  title_size: Optional[float] = None) -> None:
    """One line per model (``lines[name]`` against ``scales``), an optional shaded ``(low, high)``
    band per line, a dashed mark at 1x; written atomically to ``path`` (also used by sweep.py)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, ys in lines.items():
        line, = ax.plot(scales, ys, marker='o', label=name)
        if bands and name in bands:
            ax.fill_between(scales, *bands[name], color=line.get_color(), alpha=0.15)
    ax.axvline(1.0, color='grey', linestyle='--', linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({} if title_size is None else {'fontsize': title_size}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_target(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot(metric: str, scales: list[float], columns: list[str], values: np.ndarray, path: str, title: str, *,
         xlabel: str = 'test scale (× training resolution)') -> None:
    """Mean over seeds per model, with the min..max band when there are several seeds."""
    bands = {c: (values[:, i].min(0), values[:, i].max(0)) for i, c in enumerate(columns)} if len(values) > 1 else None
    plot_vs_scale(path, scales, {c: values[:, i].mean(0) for i, c in enumerate(columns)}, bands=bands,
                  ylabel=f'{metric} (mean; band = min..max over {len(values)} seeds)', title=title, title_size=10,
                  xlabel=xlabel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('results', nargs='+', help='results.json files written by sweep.py / run_study.py')
    parser.add_argument('--out-dir', default='.')
    parser.add_argument('--title', default='tiny ViT segmentation trained at 64 px: mIoU vs test scale')
    parser.add_argument('--row-header', default='test scale')
    parser.add_argument('--control', default=None, help='column to report every other column\'s margin over')
    parser.add_argument('--pair', nargs=2, action='append', default=[], metavar=('A', 'B'),
                        help='also report A - B paired by seed (repeatable)')
    args = parser.parse_args()
    metric, scales, columns, values = load(args.results)
    os.makedirs(args.out_dir, exist_ok=True)
    table = to_markdown(metric, scales, columns, values, row_header=args.row_header, control=args.control,
                        pairs=[tuple(p) for p in args.pair])
    with atomic_write(osp.join(args.out_dir, 'results.md'), 'w') as f:
        f.write(table)
    plot(metric, scales, columns, values, osp.join(args.out_dir, 'results.png'), args.title)
    print(table)
    print('wrote', osp.join(args.out_dir, 'results.md'), osp.join(args.out_dir, 'results.png'))


if __name__ == '__main__':
    main()
