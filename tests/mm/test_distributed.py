"""Distributed training on MMEngine's own machinery (torchrun -> ``--launcher pytorch`` -> DDP), on the
CPU with gloo, compared with a single process that sees the same total batch.

What is compared, and why it must be equal:
  2 processes x batch 1 under DDP average the two per-rank gradients; each per-rank loss is a mean
  over its one sample, so the averaged gradient is the gradient of the mean over the two samples,
  which is what 1 process x batch 2 computes, provided (a) DefaultSampler hands rank r the
  samples r, r+2, ... of the same seeded permutation (checked from what each rank trained on), (b)
  there is no batch-coupled layer (BN) and no random draw in the step (dropout 0). Then every
  weight, the AdamW moments and the step counter agree to float tolerance after 6 iterations.

The demo detector through tools/dist_train.sh (2 ranks against gradient accumulation in one process)
is the last test of this file, test_demo_detector_dist_train_matches_single_process.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest
import torch

import ropevit.mm  # noqa: F401
from ropevit.checkpoint.io import load_checkpoint_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(ROOT, 'tests', 'resume_driver.py')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def batches(record) -> dict[int, set[str]]:
    out: dict[int, set[str]] = collections.defaultdict(set)
    for line in open(record).read().splitlines():
        it, idx = line.split()
        out[int(it)] |= set(idx.split(','))
    return dict(out)


def assert_same_training(a: dict, b: dict, *, steps: int, earlier, moved: float, rtol: tuple[float, float],
                         atol: tuple[float, float]) -> None:
    """Checkpoints ``a`` (one process) and ``b`` (distributed) hold the same weights and AdamW moments
    after ``steps`` optimizer steps (tolerances: weights, moments), and the weights moved by more than
    ``moved`` since the ``earlier`` checkpoint of ``a``'s run (so the comparison can fail)."""
    for k in a['state_dict']:
        torch.testing.assert_close(b['state_dict'][k], a['state_dict'][k], rtol=rtol[0], atol=atol[0], msg=k)
    for i, st in a['optimizer']['state'].items():
        assert float(b['optimizer']['state'][i]['step']) == float(st['step']) == steps
        torch.testing.assert_close(b['optimizer']['state'][i]['exp_avg'], st['exp_avg'], rtol=rtol[1], atol=atol[1])
    first = load_checkpoint_file(earlier)['state_dict']
    assert max((first[k] - a['state_dict'][k]).abs().max().item() for k in first) > moved


def test_two_cpu_processes_match_one_process_with_the_same_total_batch(tmp_path):
    common = ['toy', '--dropout', '0', '--max-iters', '6']
    single = subprocess.run(
        [sys.executable, DRIVER, '--record', str(tmp_path / 'single.txt')] + common
        + [str(tmp_path / 'single'), '--batch-size', '2'],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    dist = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', str(free_port()), DRIVER, '--record', str(tmp_path / 'dist.txt')] + common
        + [str(tmp_path / 'dist'), '--batch-size', '1', '--launcher', 'pytorch'],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    log = dist.stdout + dist.stderr
    assert dist.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # MMEngine's name for the world size
    assert 'using the gloo backend instead of nccl' in log

    # Data sharding: each step the two ranks together trained on the single run's batch.
    s, d = batches(tmp_path / 'single.txt'), batches(tmp_path / 'dist.txt')
    assert s == d and all(len(v) == 2 for v in d.values()), (s, d)
    assert len(open(tmp_path / 'dist.txt').read().splitlines()) == 2 * 6  # one line per rank and step

    a = load_checkpoint_file(tmp_path / 'single' / 'iter_6.pth')
    b = load_checkpoint_file(tmp_path / 'dist' / 'iter_6.pth')  # saved by rank 0 only
    assert a['state_dict'].keys() == b['state_dict'].keys()  # no 'module.' prefix from DDP
    # The comparison can fail: the weights did move during these 6 steps.
    assert_same_training(a, b, steps=6, earlier=tmp_path / 'single' / 'iter_2.pth', moved=1e-3,
                         rtol=(1e-5, 1e-4), atol=(1e-6, 1e-7))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the failure being fixed only exists without CUDA')
def test_plain_mmengine_cannot_launch_on_cpu(tmp_path):
    """Without ropevit.mm.cpu_dist, MMEngine's pytorch launcher calls torch.cuda.set_device."""
    code = ('import os, sys; sys.argv=["x"]; os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", '
            'MASTER_ADDR="127.0.0.1", MASTER_PORT="%d");'
            'from mmengine.dist import init_dist\n'
            'try:\n    init_dist("pytorch", backend="gloo")\nexcept Exception as e:\n    print("FAILED", e)\n'
            'else:\n    print("OK")' % free_port())
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, env=ENV,
                         timeout=60).stdout
    assert 'FAILED' in out and 'NVIDIA' in out, out


def test_slurm_launcher_two_cpu_processes(tmp_path):
    """``--launcher slurm`` is MMEngine's own: it reads the variables srun sets (SLURM_PROCID,
    SLURM_NTASKS, SLURM_LOCALID, SLURM_NODELIST). Two processes started with them (as srun would on
    one node) train together and match the single-process run with the same total batch."""
    common = ['toy', '--dropout', '0', '--max-iters', '4']
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = dict(ENV, SLURM_PROCID=str(rank), SLURM_NTASKS='2', SLURM_LOCALID=str(rank),
                   SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1', MASTER_PORT=port)
        procs.append(subprocess.Popen(
            [sys.executable, DRIVER] + common + [str(tmp_path / 'slurm'), '--batch-size', '1', '--launcher', 'slurm'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env))
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    assert 'Distributed launcher: slurm' in logs[0] and 'GPU number: 2' in logs[0]
    single = subprocess.run([sys.executable, DRIVER] + common + [str(tmp_path / 'single'), '--batch-size', '2'],
                            capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_checkpoint_file(tmp_path / 'single' / 'iter_4.pth')['state_dict']
    b = load_checkpoint_file(tmp_path / 'slurm' / 'iter_4.pth')['state_dict']
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_demo_detector_dist_train_matches_single_process(tmp_path):
    """tools/dist_train.sh CONFIG 2 (torchrun, gloo) on the demo Mask R-CNN: 2 ranks x batch 1 against
    1 process x batch 1 with gradient accumulation over 2 (``optim_wrapper.accumulative_counts=2``).

    Why not 1 process x batch 2: mmdet normalises the RPN, RoI and mask losses per batch (sum over the
    batch's samples / their count), while DDP averages per-rank losses normalised per image, so the two
    differ by design (measured: 3e-4 after 2 epochs, the size of the updates themselves). Batch 1 with
    accumulation averages per-image-normalised losses exactly as DDP does. The samplers are set to keep
    every candidate, drop-path and flip are off and the lr is constant, so a step draws no random
    numbers (each rank would otherwise draw from its own copy of the seeded stream). Compared: the
    image ids each optimizer step used (recorded per rank by tests/resume_driver.py's RecordBatchesHook,
    which a config adds to the dist_train.sh run), every weight, AdamW moments and step count of the
    final checkpoint (saved by rank 0).
    """
    import json

    import demo_helpers as demo
    data = demo.make_coco(tmp_path / 'data')
    config = demo.tiny_config(tmp_path, data, batch_size=1, max_epochs=2, deterministic_step=True)
    single = demo.train(config, tmp_path / 'single', ['optim_wrapper.accumulative_counts=2'],
                        record=tmp_path / 'single.txt')
    assert single.returncode == 0, single.stderr[-3000:]
    recording = tmp_path / 'tiny_demo_recording.py'   # dist_train.sh runs train.py without the driver
    recording.write_text(f"_base_ = {str(config)!r}\n"
                         f"custom_imports = dict(imports=['ropevit.mm', 'resume_driver'], "
                         f"allow_failed_imports=False)\n"
                         f"custom_hooks = [dict(type='RecordBatchesHook', record={str(tmp_path / 'dist.txt')!r})]\n")
    dist = demo.run(['bash', demo.DIST_TRAIN, recording, '2', '--work-dir', tmp_path / 'dist'], timeout=200,
                    PORT=str(free_port()),  # dist_train.sh's variable for the rendezvous port
                    PYTHONPATH=os.pathsep.join([os.path.join(ROOT, 'tests'), ROOT, os.environ.get('PYTHONPATH', '')]))
    log = dist.stdout + dist.stderr
    assert dist.returncode == 0, log[-4000:]
    assert 'Distributed launcher: pytorch' in log and 'GPU number: 2' in log

    # Image ids per optimizer step: micro-steps 2k, 2k+1 of the single run against iteration k of the
    # two ranks; each epoch (2 optimizer steps) sees every training image once, none twice.
    images = json.loads((data / 'annotations' / 'instances_train2017.json').read_text())['images']
    train_ids = sorted(str(im['id']) for im in images)
    one, two = demo.records(tmp_path / 'single.txt'), demo.records(tmp_path / 'dist.txt')
    assert sorted(i for i, _ in one) == list(range(8)), one        # 2 epochs x 4 images, batch 1
    assert sorted(i for i, _ in two) == sorted(2 * list(range(4))), two  # 4 iterations x 2 ranks
    assert all(len(ids.split(',')) == 1 for _, ids in one + two)
    step_single = {k: sorted(ids for i, ids in one if i // 2 == k) for k in range(4)}
    step_dist = {k: sorted(ids for i, ids in two if i == k) for k in range(4)}
    assert step_dist == step_single, (step_dist, step_single)
    for epoch in (0, 1):
        assert sorted(step_dist[2 * epoch] + step_dist[2 * epoch + 1]) == train_ids, (epoch, step_dist)
    a = load_checkpoint_file(tmp_path / 'single' / 'epoch_2.pth')
    b = load_checkpoint_file(tmp_path / 'dist' / 'epoch_2.pth')
    assert a['meta']['iter'] == 2 * b['meta']['iter'] == 8  # 8 micro-steps = 4 optimizer steps of 2 images
    assert_same_training(a, b, steps=4, earlier=tmp_path / 'single' / 'epoch_1.pth', moved=1e-6,
                         rtol=(1e-4, 1e-3), atol=(1e-6, 1e-8))


_EXIT_SCRIPT = r'''
import logging, os, sys
import torch.distributed as dist
from ropevit.cli import exit_tool
os.environ.update(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=sys.argv[1])
dist.init_process_group('gloo')
log = logging.getLogger('exit_tool_test')
log.addHandler(logging.FileHandler(sys.argv[2]))
log.error('written before the exit')
print('printed before the exit', end='')          # no newline: only an explicit flush gets it out
exit_tool(int(sys.argv[3]))
'''


@pytest.mark.parametrize('code', [0, 3])
def test_exit_tool_leaves_the_process_group_flushes_and_keeps_the_exit_code(tmp_path, code):
    """tools/train.py / test.py end with exit_tool: a distributed process destroys its group and leaves
    with os._exit (no teardown, where gloo's threads could abort it), with its output and logs written."""
    log = tmp_path / 'log.txt'
    done = subprocess.run([sys.executable, '-c', _EXIT_SCRIPT, str(free_port()), str(log), str(code)],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60)
    assert done.returncode == code, done.stderr[-2000:]
    assert done.stdout == 'printed before the exit'
    assert log.read_text() == 'written before the exit\n'
