"""The torch >= 2.6 checkpoint fix (runtime fix 'checkpoint_loading', ropevit.mm.compat): mmengine's own checkpoints load with
``weights_only=True`` kept, mmengine's local-file loader is routed through
ropevit.checkpoint.io.load_checkpoint_file (refused and broken files say why), and resume works."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import ropevit.mm  # noqa: F401
from mmengine.logging import MessageHub
from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint

from ropevit.checkpoint.io import UnsafeCheckpointError, load_checkpoint_file
from ropevit.mm import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True, scope='module')
def _checkpoint_loading_fix():
    """Turned on as ropevit's tools and configs (``'ropevit.mm.fixes'``) do."""
    was_on = 'checkpoint_loading' in runtime.active()
    runtime.enable('checkpoint_loading')
    yield
    if not was_on:
        runtime.disable('checkpoint_loading')


def _mmengine_style_checkpoint(path):
    hub = MessageHub.get_instance('compat_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(1.25))
    hub.update_info('iter', 7)
    ckpt = {
        'meta': {'epoch': 1, 'iter': 7, 'seed': np.int64(3), 'mean': np.array([1.0, 2.0])},
        'state_dict': nn.Linear(3, 2).state_dict(),
        'message_hub': hub.state_dict(),
    }
    save_checkpoint(ckpt, str(path))
    return ckpt


def test_mmengine_checkpoint_round_trip(tmp_path):
    path = tmp_path / 'iter_7.pth'
    ckpt = _mmengine_style_checkpoint(path)
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert loaded['meta']['iter'] == 7
    np.testing.assert_array_equal(loaded['meta']['mean'], ckpt['meta']['mean'])
    for k, v in ckpt['state_dict'].items():
        torch.testing.assert_close(loaded['state_dict'][k], v)
    hub = MessageHub.get_instance('compat_test_restored')
    hub.load_state_dict(loaded['message_hub'])
    assert hub.get_scalar('train/loss').current() == pytest.approx(1.25)
    assert hub.get_info('iter') == 7


def test_fix_is_needed_without_ropevit(tmp_path):
    """Plain mmengine on this torch cannot read its own checkpoint: the fix is load-bearing.

    What fails is torch's weights-only unpickler (torch >= 2.6 default) refusing the first numpy
    object in ``meta``, not anything else (a missing file, a broken pickle would fail differently)."""
    path = tmp_path / 'ckpt.pth'
    _mmengine_style_checkpoint(path)
    code = textwrap.dedent(f"""
        import json, pickle, sys
        from mmengine.runner.checkpoint import _load_checkpoint
        try:
            _load_checkpoint({str(path)!r}, map_location='cpu')
        except BaseException as e:
            print(json.dumps(dict(type=type(e).__module__ + '.' + type(e).__qualname__,
                                  unpickling=isinstance(e, pickle.UnpicklingError), message=str(e),
                                  ropevit=any(m.startswith('ropevit') for m in sys.modules))))
        else:
            print(json.dumps(dict(type=None)))
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got['type'] == '_pickle.UnpicklingError' and got['unpickling'], got
    assert not got['ropevit'], 'the subprocess must run plain mmengine'
    msg = got['message']
    assert msg.startswith('Weights only load failed.'), msg
    # The numpy scalar seed in meta is the first object outside torch's default allowlist.
    assert 'Unsupported global: GLOBAL numpy._core.multiarray.scalar' in msg, msg


class _Payload:
    def __reduce__(self):
        return (open, (os.environ['ROPEVIT_PWNED_PATH'], 'w'))


def test_checkpoint_with_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('ROPEVIT_PWNED_PATH', str(marker))
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': _Payload()}, str(path))
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match='allowlist'):
        load_checkpoint_file(path)
    # Through mmengine's loader (what load_from / resume / init_cfg use) too.
    with pytest.raises(UnsafeCheckpointError, match='could run code'):
        _load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists(), 'the pickled payload was executed'


def test_truncated_and_missing_checkpoint(tmp_path):
    path = tmp_path / 'full.pth'
    torch.save({'state_dict': nn.Linear(64, 64).state_dict()}, str(path))
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(RuntimeError, match='truncated'):
        load_checkpoint_file(cut)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(tmp_path / 'nope.pth')


def test_runner_resume_restores_state(tmp_path):
    """End to end through mmengine's Runner: train, save, resume in a new runner."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        steps = 0  # training steps taken, over all instances

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, inputs, labels=None, mode='tensor'):
            out = self.linear(torch.stack(inputs) if isinstance(inputs, list) else inputs)
            if mode == 'loss':
                Toy.steps += 1
                return {'loss': ((out.squeeze(-1) - torch.stack(labels).float()) ** 2).mean()}
            return out

    class ToyData(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return dict(inputs=torch.tensor([float(i), 1.0]), labels=torch.tensor(float(i % 3)))

    def make_runner(work_dir, max_iters, resume):
        return Runner(
            model=Toy(), work_dir=str(work_dir),
            train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=True),
                                  batch_size=4, num_workers=0),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
            param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=max_iters),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                               logger=dict(type='LoggerHook', interval=1)),
            resume=resume, randomness=dict(seed=0), experiment_name=f'toy{max_iters}{resume}')

    first = make_runner(tmp_path, 2, False)
    first.train()
    state = {k: v.clone() for k, v in first.model.state_dict().items()}
    opt_state = first.optim_wrapper.optimizer.state_dict()['state']
    # Same schedule, resumed: the loop has nothing left to do, so what we see is what was restored.
    assert Toy.steps == 2
    second = make_runner(tmp_path, 2, True)
    second.train()
    # Restored, not retrained: a run that silently started afresh would take 2 steps here.
    assert second.iter == 2 and Toy.steps == 2
    for k, v in state.items():
        torch.testing.assert_close(second.model.state_dict()[k], v)
    resumed = second.optim_wrapper.optimizer.state_dict()['state']
    assert resumed.keys() == opt_state.keys()
    for i in opt_state:
        assert float(resumed[i]['step']) == float(opt_state[i]['step']) == 2
        torch.testing.assert_close(resumed[i]['exp_avg'], opt_state[i]['exp_avg'])
    assert second.param_schedulers[0].last_step == first.param_schedulers[0].last_step


class _GetattrEscape:
    """A pickle that uses the allowlisted getattr to reach something else."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_restricted_to_history_buffer_methods(tmp_path):
    path = tmp_path / 'escape.pth'
    torch.save({'meta': _GetattrEscape()}, str(path))
    with pytest.raises(UnsafeCheckpointError, match=r'\(builtins\.getattr \(restricted\)\) outside the allowlist'):
        load_checkpoint_file(path)
