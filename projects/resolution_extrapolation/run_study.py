"""The study end to end: generate the quadrant scenes, train every arm for every seed with the same
budget, sweep both test regimes, aggregate over seeds.

    python projects/resolution_extrapolation/run_study.py --seeds 0 1 2 --jobs 2

1. ``make_data.py`` (if ``--data-root`` is missing): 64 px training / validation scenes and larger
   validation scenes (96, 128 px) at the same object scale.
2. Every arm of :data:`ARMS` x every seed is trained by ``tools/train.py`` (a subprocess each,
   ``--jobs`` at a time, one thread each); work dirs ``<work-dir>/seed<N>/<arm>``.
3. Per seed, ``sweep.py`` evaluates every checkpoint in two regimes, plus ``'interpolate'``
   coordinates (reference 64 px, the training size) on the arms trained with patch indices (a
   test-time switch, no retraining):

   * ``rescale``: the 64 px validation scenes resized by 0.5x .. 2x (the same content, more or fewer
     pixels per object);
   * ``scenes``: scenes of 64 / 96 / 128 px at the training object scale (more tokens, the same
     pixels per object), i.e. scale 1, 1.5, 2 on the ``validation_<S>`` splits.
4. ``aggregate.py`` writes ``results_{rescale,scenes}.{md,png}`` (mean +- std over seeds, change vs
   the training size, the margin of every arm over the NoPE control) into ``--out-dir``, and
   ``timings.json`` records the wall time of every step.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
CONFIGS = osp.join(HERE, 'configs')

#: column name -> config; they differ only in backbone.rope / use_ape / rope_coords / rope_coords_aug.
ARMS: dict[str, str] = {
    'NoPE': 'quadrants_nope.py',
    'APE': 'quadrants_ape.py',
    'RoPE-Axial': 'quadrants_rope-axial.py',
    'RoPE-Mixed': 'quadrants_rope-mixed.py',
    'RoPE-Mixed + APE': 'quadrants_rope-mixed-ape.py',
    'RoPE-Axial normalized': 'quadrants_rope-axial-normalized.py',
    'RoPE-Mixed normalized': 'quadrants_rope-mixed-normalized.py',
}
RESCALE = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0]
SCENES = {1.0: 'validation', 1.5: 'validation_96', 2.0: 'validation_128'}   # scale -> split
CONTROL = 'NoPE'
#: paired comparisons the README reads (A - B per seed)
PAIRS = [('APE', 'RoPE-Axial'), ('RoPE-Axial', 'RoPE-Mixed'), ('RoPE-Mixed + APE', 'RoPE-Mixed'),
         ('RoPE-Axial (interpolate)', 'APE'), ('RoPE-Axial normalized', 'RoPE-Axial (interpolate)'),
         ('RoPE-Axial normalized', 'RoPE-Mixed normalized'), ('RoPE-Axial', 'APE')]
#: arms trained with patch-index coordinates: the sweep also evaluates them with 'interpolate'
INDEX_ROPE_ARMS = ('RoPE-Axial', 'RoPE-Mixed', 'RoPE-Mixed + APE')


def arm_dir(work_dir: str, seed: int, config: str) -> str:
    return osp.join(work_dir, f'seed{seed}', config[len('quadrants_'):-len('.py')])


def _run(cmd: list[str], log_path: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=ROOT)
    start = time.time()
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(cmd)} failed (exit {proc.returncode}); see {log_path}')
    return time.time() - start


def train(config: str, work_dir: str, seed: int) -> float:
    """``tools/train.py`` with the seed; returns the wall time in seconds."""
    cmd = [sys.executable, 'tools/train.py', osp.join(CONFIGS, config), '--work-dir', work_dir,
           '--skip-data-check', '--cfg-options', f'randomness.seed={seed}']
    return _run(cmd, osp.join(work_dir, 'train.out'))


def checkpoint_of(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def sweep_seed(work_dir: str, seed: int, arms: dict[str, str], data_root: str) -> float:
    """Both regimes of one seed (``sweep.py`` subprocesses); returns the wall time."""
    models = []
    for name, config in arms.items():
        models += ['--model', osp.join(CONFIGS, config), checkpoint_of(arm_dir(work_dir, seed, config)), name]
    seconds = 0.0
    base = [sys.executable, osp.join(HERE, 'sweep.py'), *models]
    index_arms = [n for n in arms if n in INDEX_ROPE_ARMS]
    if index_arms:                                  # the test-time strategy, on the arms trained with indices
        base += ['--rope-coords', 'interpolate', '--rope-coords-models', *index_arms]
    out = osp.join(work_dir, f'seed{seed}', 'rescale')
    seconds += _run(base + ['--scales', *map(str, RESCALE), '--out-dir', out], osp.join(out, 'sweep.out'))
    out = osp.join(work_dir, f'seed{seed}', 'scenes')
    prefixes = []
    for split in SCENES.values():
        prefixes += ['--data-prefix', f'images/{split}', f'annotations/{split}']
    seconds += _run(base + ['--scales', *map(str, SCENES), *prefixes, '--out-dir', out], osp.join(out, 'sweep.out'))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-root', default='data/extrapolation_quadrants')
    parser.add_argument('--work-dir', default='work_dirs/resolution_extrapolation')
    parser.add_argument('--out-dir', default=HERE)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--arms', nargs='+', default=list(ARMS), choices=list(ARMS), metavar='ARM')
    parser.add_argument('--jobs', type=int, default=2, help='trainings / sweeps at a time (one thread each)')
    parser.add_argument('--skip-train', action='store_true', help='reuse the checkpoints in --work-dir')
    args = parser.parse_args()
    os.chdir(ROOT)                                                      # configs use data/... paths
    sys.path[:0] = [ROOT, HERE]
    import aggregate
    import make_data
    arms = {a: ARMS[a] for a in args.arms}
    timings: dict[str, float] = {}
    start = time.time()
    if not osp.isdir(osp.join(args.data_root, 'images', 'validation_128')):
        make_data.make_dataset(args.data_root)
        timings['data'] = time.time() - start
    with ThreadPoolExecutor(args.jobs) as pool:
        if not args.skip_train:
            jobs = {(name, seed): pool.submit(train, config, arm_dir(args.work_dir, seed, config), seed)
                    for seed in args.seeds for name, config in arms.items()}
            for (name, seed), job in jobs.items():
                timings[f'train {name} seed{seed}'] = job.result()
                print(f'trained {name} seed {seed} in {timings[f"train {name} seed{seed}"]:.0f} s', flush=True)
        sweeps = {seed: pool.submit(sweep_seed, args.work_dir, seed, arms, args.data_root) for seed in args.seeds}
        for seed, job in sweeps.items():
            timings[f'sweep seed{seed}'] = job.result()
    timings['total'] = time.time() - start
    for regime, header in (('rescale', 'test scale (x the 64 px scenes, resized)'),
                           ('scenes', 'scene size (x 64 px, same object scale)')):
        paths = [osp.join(args.work_dir, f'seed{s}', regime, 'results.json') for s in args.seeds]
        metric, scales, columns, values = aggregate.load(paths)
        table = aggregate.to_markdown(metric, scales, columns, values, row_header=header,
                                      control=CONTROL if CONTROL in columns else None,
                                      pairs=[p for p in PAIRS if set(p) <= set(columns)])
        with open(osp.join(args.out_dir, f'results_{regime}.md'), 'w') as f:
            f.write(table)
        aggregate.plot(metric, scales, columns, values, osp.join(args.out_dir, f'results_{regime}.png'),
                       f'quadrant scenes, trained at 64 px: mIoU vs {regime} ({len(args.seeds)} seeds)',
                       xlabel=header)
        print(table)
    with open(osp.join(args.out_dir, 'timings.json'), 'w') as f:
        json.dump(dict(seconds=timings, jobs=args.jobs, seeds=args.seeds, arms=list(arms)), f, indent=1)
    print(f'total {timings["total"] / 60:.1f} min')


if __name__ == '__main__':
    main()
