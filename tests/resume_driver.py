"""Runs a training script in this process with a SIGKILL armed at a chosen point, and records what it
trained on. Used by test_resume.py and test_distributed.py directly, and through tests/demo_helpers.py
(``demo.train``) by test_resume.py, test_amp.py, test_distributed.py and test_bad_input.py.

    python tests/resume_driver.py [--kill SPEC] [--no-fix] [--record FILE] [--rope-report FILE] SCRIPT [ARGS...]

SCRIPT is ``toy`` (a tiny mmengine Runner defined below; ARGS: WORK_DIR [--resume] [--max-keep N]
[--launcher none|pytorch|slurm] [--batch-size N] [--max-iters N] [--accum N] [--dropout P] [--by-epoch])
or a path such as ``tools/train.py`` (run as ``__main__`` with ARGS as its argv).

--kill iter:K          SIGKILL right after training iteration K finished (after its checkpoint, if any).
--kill write:NAME:N    SIGKILL during the N-th write of a file whose name contains NAME, after half of the
                       first chunk is on disk (models a kill while a checkpoint or the pointer is written).
--no-fix               toy only: plain MMEngine checkpointing and resume (CheckpointHook, no RNGStateHook,
                       MMEngine's find_latest_checkpoint), to show each fix is needed. Checkpoint loading on
                       torch >= 2.6 and the CPU AMP / DDP fixes stay on (without them nothing resumes here).
--record FILE          append "iter sample-indices" for every trained iteration (data order); each rank
                       of a distributed run appends its own line.
--rope-report FILE     append "cos-dtype sin-dtype autocast-on" for every RoPE table the backbones build.

Runs started without this driver (``tools/dist_train.sh``) record the same lines with the
``RecordBatchesHook`` defined here, imported by a config (tests/ on ``PYTHONPATH``)::

    custom_imports = dict(imports=['ropevit.mm', 'resume_driver'], allow_failed_imports=False)
    custom_hooks = [dict(type='RecordBatchesHook', record='/path/to/order.txt')]
"""
from __future__ import annotations

import argparse
import builtins
import os
import runpy
import signal
import sys

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingFile:
    def __init__(self, f) -> None:
        self._f = f

    def write(self, data):
        self._f.write(data[:max(1, len(data) // 2)])
        self._f.flush()
        _die()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def arm_write_kill(name: str, nth: int) -> None:
    real_open = builtins.open
    seen = [0]

    def open_(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and name in os.path.basename(os.fspath(file)) \
                and ('w' in mode):
            seen[0] += 1
            if seen[0] == nth:
                return _KillingFile(f)
        return f

    builtins.open = open_


def report_rope_tables(path: str) -> None:
    """Wrap rope_cos_sin where the backbones call it and log the dtypes of every table built."""
    import importlib

    import torch
    from ropevit.layers.rope import rope_cos_sin

    def recording(freqs, coords):
        cos, sin = rope_cos_sin(freqs, coords)
        with open(path, 'a') as f:
            f.write(f'{cos.dtype} {sin.dtype} {torch.is_autocast_enabled(coords.device.type)}\n')
        return cos, sin

    for name in ('ropevit.layers.rope_tables', 'ropevit.layers.swin_attention', 'ropevit.layers.swin_block',
                 'ropevit.layers.vit_rope'):
        mod = importlib.import_module(name)
        if hasattr(mod, 'rope_cos_sin'):
            mod.rope_cos_sin = recording


@HOOKS.register_module(force=True)  # force: registered again when a config imports this module
class RecordBatchesHook(Hook):
    """Appends ``"<iter> <id>,<id>,..."`` to ``record`` before every training iteration: the toy data's
    sample indices, or the ``img_id`` of each detection sample. One line per rank and iteration."""

    priority = 'LOWEST'

    def __init__(self, record: str) -> None:
        self.record = str(record)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        with open(self.record, 'a') as f:  # one short append per line: ranks do not interleave
            f.write(f'{runner.iter} {_indices(data_batch)}\n')


def extra_hooks(kill_iter: int | None, record: str | None):
    class Kill(Hook):
        priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) in after_train_iter

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if kill_iter is not None and runner.iter + 1 == kill_iter:
                _die()

    return ([RecordBatchesHook(record)] if record else []) + [Kill()]


def _indices(data_batch) -> str:
    if isinstance(data_batch, dict) and 'idx' in data_batch:  # toy data
        return ','.join(str(int(i)) for i in data_batch['idx'])
    samples = data_batch.get('data_samples', []) if isinstance(data_batch, dict) else []
    ids = [s.metainfo.get('img_id', s.metainfo.get('img_path')) for s in samples]
    if not ids or None in ids:
        raise ValueError(f'RecordBatchesHook: a batch without sample ids (img_id / img_path): {data_batch!r:.300}')
    return ','.join(str(i) for i in ids)


def toy_main(argv: list[str]) -> None:
    import torch
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch import nn

    p = argparse.ArgumentParser()
    p.add_argument('work_dir')
    p.add_argument('--resume', action='store_true')
    p.add_argument('--max-keep', type=int, default=-1)
    p.add_argument('--launcher', default='none')
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--max-iters', type=int, default=8)
    p.add_argument('--accum', type=int, default=1)
    p.add_argument('--dropout', type=float, default=0.5)
    p.add_argument('--by-epoch', action='store_true', help='4 epochs of 5 iterations, checkpoint every epoch')
    args = p.parse_args(argv)

    class Toy(BaseModel):
        """Dropout makes every step draw from torch's generator, as RPN/RoI samplers do."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(args.dropout), nn.Linear(16, 1))

        def forward(self, x, y=None, idx=None, mode='tensor'):
            out = self.net(torch.stack(x)).squeeze(-1)
            if mode == 'loss':
                return {'loss': ((out - torch.stack(y)) ** 2).mean()}
            return [dict(pred=o, y=t) for o, t in zip(out, y)]

    class ToyData(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return dict(x=torch.randn(4, generator=g), y=torch.tensor(float(i % 3)), idx=i)

    class MSE(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results += [float((s['pred'] - s['y']) ** 2) for s in data_samples]

        def compute_metrics(self, results):
            return dict(mse=sum(results) / len(results))

    def _seeded(cls):
        torch.manual_seed(0)  # the model is built here, before the Runner seeds; configs build it after
        return cls()

    runner = Runner(
        model=_seeded(Toy), work_dir=args.work_dir,
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=args.batch_size, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        val_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=False),
                            batch_size=5, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        val_evaluator=dict(type=MSE), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05), accumulative_counts=args.accum),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8 * args.accum),
        # 10 samples / batch 2: an epoch ends after iteration 5 (a new shuffled order, a new iterator)
        train_cfg=(dict(by_epoch=True, max_epochs=4, val_interval=1) if args.by_epoch
                   else dict(by_epoch=False, max_iters=args.max_iters, val_interval=3)),
        default_hooks=dict(checkpoint=dict(type=CHECKPOINT_HOOK, interval=1 if args.by_epoch else 2,
                                           by_epoch=args.by_epoch, max_keep_ckpts=args.max_keep),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=RELIABILITY_HOOKS + EXTRA_HOOKS, resume=args.resume, randomness=dict(seed=0),
        default_scope='mmengine', launcher=args.launcher, env_cfg=dict(dist_cfg=dict(backend='nccl')))
    runner.train()


EXTRA_HOOKS: list = []
CHECKPOINT_HOOK = 'AtomicCheckpointHook'  # what ropevit's configs name (docs/RELIABILITY.md)
RELIABILITY_HOOKS: list = [dict(type='RNGStateHook')]

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--kill')
    ap.add_argument('--no-fix', action='store_true')
    ap.add_argument('--record')
    ap.add_argument('--rope-report')
    ap.add_argument('script')
    ap.add_argument('rest', nargs=argparse.REMAINDER)
    a = ap.parse_args()

    import ropevit.mm  # noqa: F401  (what configs pull in with custom_imports)
    from ropevit.mm import runtime
    if a.no_fix:
        runtime.enable('checkpoint_loading', 'cpu_amp', 'cpu_dist')
        CHECKPOINT_HOOK, RELIABILITY_HOOKS = 'CheckpointHook', []
    else:
        runtime.enable()  # what `'ropevit.mm.fixes'` in custom_imports does
    kill_iter = None
    if a.kill and a.kill.startswith('iter:'):
        kill_iter = int(a.kill.split(':')[1])
    elif a.kill and a.kill.startswith('write:'):
        _, name, nth = a.kill.split(':')
        arm_write_kill(name, int(nth))
    EXTRA_HOOKS = extra_hooks(kill_iter, a.record)
    if a.rope_report:
        report_rope_tables(a.rope_report)

    if a.script == 'toy':
        toy_main(a.rest)
        from ropevit.cli import exit_tool
        exit_tool(0)                    # as tools/train.py ends: a distributed run leaves its group first
    else:
        # Real entry point (tools/train.py): add our hooks to whatever Runner it builds.
        from mmengine.runner import Runner
        orig = Runner.register_hooks

        def register_hooks(self, default_hooks=None, custom_hooks=None):
            orig(self, default_hooks, custom_hooks)
            for h in EXTRA_HOOKS:
                self.register_hook(h)

        Runner.register_hooks = register_hooks
        sys.argv = [a.script] + a.rest
        sys.path.insert(0, os.path.dirname(os.path.abspath(a.script)))  # as `python SCRIPT` would
        runpy.run_path(a.script, run_name='__main__')
