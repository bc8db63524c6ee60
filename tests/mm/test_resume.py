"""Crash and resume: a training process SIGKILLed between or during checkpoint writes resumes with
``--resume`` and ends where an uninterrupted run with the same seed ends.

Each run is a real subprocess (tests/resume_driver.py) killed with SIGKILL at a chosen point; the
toy runner has dropout (every step draws from torch's generator, as mmdet's RPN/RoI samplers do), a
shuffled DefaultSampler whose epoch ends mid-run, validation every 3 iterations and checkpoints every
2, so data order, RNG state, optimizer and scheduler all have to come back for the weights to match.
The same with the demo detector config through tools/train.py (tests/demo_helpers.py) is the last test
of this file, test_demo_detector_sigkill_then_resume_matches_uninterrupted.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import ropevit.mm  # noqa: F401
from ropevit.checkpoint.io import load_checkpoint_file
from ropevit.mm import runtime
from ropevit.mm.latest_checkpoint import find_latest_checkpoint, is_readable_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(ROOT, 'tests', 'resume_driver.py')


def run_toy(work_dir, *, kill: str | None = None, resume: bool = False, no_fix: bool = False,
            record=None, max_keep: int = -1, by_epoch: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, DRIVER]
    cmd += ['--kill', kill] if kill else []
    cmd += ['--no-fix'] if no_fix else []
    cmd += ['--record', str(record)] if record else []
    cmd += ['toy', str(work_dir), '--max-keep', str(max_keep)] + (['--resume'] if resume else [])
    cmd += ['--by-epoch'] if by_epoch else []
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def records(path) -> list[tuple[int, str]]:
    return [(int(line.split()[0]), line.split()[1]) for line in open(path).read().splitlines()]


def assert_same_training_state(a: str, b: str, *, exact: bool = True) -> None:
    """Weights, optimizer state, scheduler state and counters of two checkpoints."""
    ca, cb = load_checkpoint_file(a), load_checkpoint_file(b)
    tol = dict(rtol=0, atol=0) if exact else {}
    assert ca['meta']['iter'] == cb['meta']['iter'] and ca['meta']['epoch'] == cb['meta']['epoch']
    assert ca['state_dict'].keys() == cb['state_dict'].keys()
    for k in cb['state_dict']:
        torch.testing.assert_close(ca['state_dict'][k], cb['state_dict'][k], **tol, msg=k)
    oa, ob = ca['optimizer'], cb['optimizer']
    assert oa['param_groups'] == ob['param_groups']  # lr (scheduled), betas, weight decay
    for i in ob['state']:
        assert float(oa['state'][i]['step']) == float(ob['state'][i]['step'])
        for key in ('exp_avg', 'exp_avg_sq'):
            torch.testing.assert_close(oa['state'][i][key], ob['state'][i][key], **tol)
    assert ca['param_schedulers'] == cb['param_schedulers']  # last_step, _last_lr, ...
    torch.testing.assert_close(ca['meta']['rng_state']['torch'], cb['meta']['rng_state']['torch'])


def max_weight_diff(a: str, b: str) -> float:
    sa, sb = load_checkpoint_file(a)['state_dict'], load_checkpoint_file(b)['state_dict']
    return max((sa[k] - sb[k]).abs().max().item() for k in sb)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The uninterrupted run: 8 iterations, checkpoints at 2, 4, 6, 8."""
    d = tmp_path_factory.mktemp('ref')
    r = run_toy(d / 'work', record=d / 'order.txt')
    assert r.returncode == 0, r.stderr[-3000:]
    return d


def test_sigkill_between_checkpoints_then_resume_matches_uninterrupted(reference, tmp_path):
    work, order = tmp_path / 'work', tmp_path / 'order.txt'
    killed = run_toy(work, kill='iter:5', record=order)  # dies after iteration 5; last checkpoint: 4
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (work / 'iter_6.pth').exists()
    assert open(work / 'last_checkpoint').read().strip().endswith('iter_4.pth')

    resumed = run_toy(work, resume=True, record=order)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 4' in resumed.stdout + resumed.stderr
    # Data order: iterations 0-4 from the killed run, 4-7 from the resumed one, same batches as
    # the uninterrupted run (DefaultSampler's seeded shuffle + MMEngine's replay of 4 batches,
    # across the epoch boundary after iteration 5).
    got, ref = records(order), records(reference / 'order.txt')
    assert got[:5] == ref[:5] and got[5:] == ref[4:], (got, ref)
    for n in (6, 8):  # every checkpoint written after the resume
        assert_same_training_state(str(work / f'iter_{n}.pth'), str(reference / 'work' / f'iter_{n}.pth'))


def test_without_rng_restore_resume_diverges(reference, tmp_path):
    """The RNG part of the fix is load-bearing: the same resume on plain MMEngine draws other dropout
    masks after the resume point (the data order is still right)."""
    work = tmp_path / 'work'
    assert run_toy(work, kill='iter:5').returncode == -9
    fixed, plain = tmp_path / 'fixed', tmp_path / 'plain'
    shutil.copytree(work, fixed)
    shutil.copytree(work, plain)
    for d in (fixed, plain):  # the pointer holds an absolute path: point it at the copy
        (d / 'last_checkpoint').write_text(str(d / 'iter_4.pth'))
    assert run_toy(plain, resume=True, no_fix=True).returncode == 0
    assert max_weight_diff(str(plain / 'iter_6.pth'), str(reference / 'work' / 'iter_6.pth')) > 1e-3
    assert run_toy(fixed, resume=True).returncode == 0
    assert max_weight_diff(str(fixed / 'iter_6.pth'), str(reference / 'work' / 'iter_6.pth')) == 0.0


def test_epoch_based_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """Epoch-based loop (no replay: MMEngine restarts at the next epoch with sampler.set_epoch):
    4 epochs of 5 iterations, checkpoint and validation every epoch, killed in epoch 3."""
    ref, work = tmp_path / 'ref', tmp_path / 'work'
    assert run_toy(ref, by_epoch=True, record=tmp_path / 'ref.txt').returncode == 0
    assert run_toy(work, by_epoch=True, kill='iter:12', record=tmp_path / 'got.txt').returncode == -9
    assert not (work / 'epoch_3.pth').exists()
    r = run_toy(work, by_epoch=True, resume=True, record=tmp_path / 'got.txt')
    assert r.returncode == 0 and 'resumed epoch: 2, iter: 10' in r.stdout + r.stderr, r.stderr[-3000:]
    got, want = records(tmp_path / 'got.txt'), records(tmp_path / 'ref.txt')
    assert got[:12] == want[:12] and got[12:] == want[10:]
    for n in (3, 4):
        assert_same_training_state(str(work / f'epoch_{n}.pth'), str(ref / f'epoch_{n}.pth'))


def _plain_mmengine_pick(work) -> str | None:
    """What MMEngine's own ``find_latest_checkpoint`` picks (the fix off, whatever turned it on before)."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    was_on = 'latest_checkpoint' in runtime.active()
    runtime.disable('latest_checkpoint')
    try:
        return mmengine_checkpoint.find_latest_checkpoint(str(work))
    finally:
        if was_on:
            runtime.enable('latest_checkpoint')


def test_kill_while_writing_checkpoint_with_max_keep_1(reference, tmp_path):
    """SIGKILL half-way through writing iter_4.pth, with max_keep_ckpts=1 (MMEngine deletes the old
    checkpoint before writing the new one). Fixed: iter_4.pth never appears half-written, iter_2.pth
    is still there, resume from it ends with the reference weights; only a hidden temp file remains,
    and the next save of that name removes it."""
    work = tmp_path / 'work'
    r = run_toy(work, kill='write:iter_4.pth:1', max_keep=1)
    assert r.returncode == -9, r.stderr[-3000:]
    names = sorted(os.listdir(work))
    assert 'iter_4.pth' not in names and 'iter_2.pth' in names, names
    assert [n for n in names if n.startswith('.iter_4.pth.') and '.ropevit-tmp' in n], names  # the cut-off write
    assert find_latest_checkpoint(str(work)) == str(work / 'iter_2.pth')

    assert run_toy(work, resume=True, max_keep=1).returncode == 0
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == ['iter_8.pth']
    assert not [n for n in os.listdir(work) if '.ropevit-tmp' in n]
    assert_same_training_state(str(work / 'iter_8.pth'), str(reference / 'work' / 'iter_8.pth'))


def test_kill_while_writing_checkpoint_plain_mmengine_breaks_resume(tmp_path):
    """The same kill on plain MMEngine: a truncated iter_4.pth under its final name, iter_2.pth
    already deleted, and the pointer names the deleted file, so --resume cannot continue."""
    work = tmp_path / 'work'
    assert run_toy(work, kill='write:iter_4.pth:1', max_keep=1, no_fix=True).returncode == -9
    names = sorted(os.listdir(work))
    assert 'iter_4.pth' in names and 'iter_2.pth' not in names, names
    assert not is_readable_checkpoint(str(work / 'iter_4.pth'))
    # What --resume would hit on that file: ropevit's loader names it and the likely cause.
    with pytest.raises(RuntimeError) as e:
        load_checkpoint_file(work / 'iter_4.pth')
    assert type(e.value) is RuntimeError  # not UnsafeCheckpointError (a subclass): nothing was refused
    assert str(e.value).startswith(f'could not read checkpoint {work / "iter_4.pth"} '
                                   f'(truncated or not a torch checkpoint): '), str(e.value)
    picked = _plain_mmengine_pick(work)
    assert picked == str(work / 'iter_2.pth') and not os.path.exists(picked)
    # ropevit's pick skips both: no readable checkpoint is left, so it says so and starts afresh.
    assert find_latest_checkpoint(str(work)) is None


def test_kill_while_writing_pointer(reference, tmp_path):
    """SIGKILL half-way through rewriting last_checkpoint (after iter_4.pth was written). Plain
    MMEngine leaves a cut path that --resume fails on; fixed, the pointer still names iter_2.pth."""
    plain, fixed = tmp_path / 'plain', tmp_path / 'fixed'
    assert run_toy(plain, kill='write:last_checkpoint:2', no_fix=True).returncode == -9
    picked = _plain_mmengine_pick(plain)
    assert picked not in (str(plain / 'iter_2.pth'), str(plain / 'iter_4.pth'))
    assert not os.path.isfile(picked)  # what plain --resume would try to load

    assert run_toy(fixed, kill='write:last_checkpoint:2').returncode == -9
    assert open(fixed / 'last_checkpoint').read() == str(fixed / 'iter_2.pth')
    r = run_toy(fixed, resume=True)
    assert r.returncode == 0 and 'resumed epoch: 0, iter: 2' in r.stdout + r.stderr
    assert_same_training_state(str(fixed / 'iter_8.pth'), str(reference / 'work' / 'iter_8.pth'))


def test_find_latest_checkpoint_falls_back_past_unreadable_files(tmp_path):
    """Directories written by runs without the fix: empty pointer, pointer to a truncated file."""
    good = tmp_path / 'iter_2.pth'
    torch.save({'state_dict': {'w': torch.ones(3)}, 'meta': {'iter': 2}}, str(good))
    cut = tmp_path / 'iter_4.pth'
    torch.save({'state_dict': {'w': torch.ones(1000)}, 'meta': {'iter': 4}}, str(cut))
    cut.write_bytes(cut.read_bytes()[:300])
    (tmp_path / '.iter_6.pth.123.ropevit-tmp').write_bytes(b'PK')  # a killed writer's temp file
    pointer = tmp_path / 'last_checkpoint'
    for text in ('', str(cut), str(tmp_path / 'iter_9.pth')):
        pointer.write_text(text)
        assert find_latest_checkpoint(str(tmp_path)) == str(good)
    pointer.write_text(str(good))
    assert find_latest_checkpoint(str(tmp_path)) == str(good)
    assert is_readable_checkpoint(str(good)) and not is_readable_checkpoint(str(cut))


# ---------------------------------------------------------------------- the demo detector, tools/train.py
def test_demo_detector_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """tools/train.py on the demo Mask R-CNN (tiny RoPE-Swin, 4 generated images, batch 2, 3 epochs of
    2 iterations, random flip, random RPN/RoI sampling, drop-path): SIGKILLed in epoch 3, resumed with
    --resume, ends with the uninterrupted run's weights, optimizer and scheduler state."""
    import demo_helpers as demo
    data = demo.make_coco(tmp_path / 'data')
    config = demo.tiny_config(tmp_path, data)
    ref = demo.train(config, tmp_path / 'ref', record=tmp_path / 'ref.txt')
    assert ref.returncode == 0, ref.stderr[-3000:]
    work, order = tmp_path / 'work', tmp_path / 'got.txt'
    killed = demo.train(config, work, kill='iter:5', record=order)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (work / 'epoch_3.pth').exists() and (work / 'epoch_2.pth').exists()
    resumed = demo.train(config, work, resume=True, record=order)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 2, iter: 4' in resumed.stdout + resumed.stderr
    got, want = demo.records(order), demo.records(tmp_path / 'ref.txt')
    assert got[:5] == want[:5] and got[5:] == want[4:], (got, want)  # image ids per iteration
    assert_same_training_state(str(work / 'epoch_3.pth'), str(tmp_path / 'ref' / 'epoch_3.pth'))
    # The run did train: the last epoch moved the weights.
    assert max_weight_diff(str(work / 'epoch_3.pth'), str(work / 'epoch_2.pth')) > 0
