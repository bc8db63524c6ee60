"""``import ropevit.mm`` registers modules and changes nothing else; the runtime fixes are opt-in.

A plug-in user who writes ``custom_imports = dict(imports=['ropevit.mm'])`` to get ``type='RoPESwin'``
must keep MMEngine's checkpointing, hooks, loaders and launchers exactly as they were. The fixes of
docs/RELIABILITY.md are turned on by name (``ropevit.mm.fixes``, ``AtomicCheckpointHook``,
``RNGStateHook``), and ropevit's own configs and tools turn them on.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MM_PACKAGES = ('mmengine', 'mmcv', 'mmdet', 'mmseg')


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def _modules_imported_by_ropevit_mm() -> list[str]:
    """The modules other than ropevit's that a fresh ``import ropevit.mm`` loads."""
    done = _python("""
        import json, sys
        import ropevit.mm
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] != 'ropevit')))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Runs in a fresh process: import those modules (torch registers some safe globals of its own on
# import), record every attribute of each mmengine / mmcv / mmdet / mmseg module (and of every class
# defined in it, from the class's own __dict__, so a replaced method is seen) by identity, then import
# ropevit.mm and list what is not the same object any more.
_SNAPSHOT_SCRIPT = r'''
import importlib, json, sys
import torch

names, packages = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
modules = {}
for name in names:
    try:
        mod = importlib.import_module(name)
    except Exception:      # a module that only imports as a side effect of another
        continue
    if name.split('.')[0] in packages:
        modules[name] = mod


def snapshot():
    seen = {}
    for name, mod in modules.items():
        for attr, value in list(vars(mod).items()):
            seen[f'{name}.{attr}'] = value
            if isinstance(value, type) and value.__module__ == name:
                for key, member in list(vars(value).items()):
                    seen[f'{name}.{attr}.{key}'] = member
    return seen


def schemes():
    from mmengine.runner.checkpoint import CheckpointLoader
    return dict(CheckpointLoader._schemes)


before, schemes_before = snapshot(), schemes()
safe_before = set(map(repr, torch.serialization.get_safe_globals()))
import ropevit.mm  # noqa: E402,F401
after, schemes_after = snapshot(), schemes()
changed = sorted(k for k in before if k in after and after[k] is not before[k])
removed = sorted(k for k in before if k not in after)
added = sorted(k for k in after if k not in before)
print(json.dumps(dict(
    modules=len(modules), changed=changed, removed=removed, added=added,
    schemes=sorted(k for k in set(schemes_before) | set(schemes_after)
                   if schemes_before.get(k) is not schemes_after.get(k)),
    safe_globals_added=sorted(set(map(repr, torch.serialization.get_safe_globals())) - safe_before))))
'''


@pytest.mark.timeout(600)
def test_import_ropevit_mm_changes_no_attribute_of_mmengine_mmcv_mmdet_mmseg():
    names = _modules_imported_by_ropevit_mm()
    assert 'mmengine.runner.checkpoint' in names and 'mmengine.hooks.checkpoint_hook' in names, names
    mm_names = [n for n in names if n.split('.')[0] in MM_PACKAGES]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    done = subprocess.run([sys.executable, '-c', _SNAPSHOT_SCRIPT, json.dumps(names), json.dumps(MM_PACKAGES)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got['modules'] == len(mm_names), (got['modules'], len(mm_names))
    assert got['changed'] == [] and got['removed'] == [] and got['added'] == [], got
    assert got['schemes'] == [], got['schemes']               # CheckpointLoader's loaders
    assert got['safe_globals_added'] == [], got['safe_globals_added']  # torch.load's allowlist


def test_runtime_enable_and_disable_are_idempotent_and_restore_every_attribute():
    """Importing ropevit.mm.runtime changes nothing; enable() installs each named fix once;
    disable() puts back the very objects it replaced. ``import ropevit.mm.fixes`` is enable()."""
    done = _python("""
        import json
        import torch
        import ropevit.mm  # (registers only; its imports make torch add safe globals of its own)
        import mmengine.dist.utils as dist_utils
        import mmengine.runner.checkpoint as ckpt_mod
        import mmengine.runner.runner as runner_mod
        from mmengine.model import MMDistributedDataParallel
        from mmengine.optim import AmpOptimWrapper
        from mmengine.runner.checkpoint import CheckpointLoader

        def state():
            return dict(find=(ckpt_mod.find_latest_checkpoint, runner_mod.find_latest_checkpoint),
                        schemes=CheckpointLoader._schemes, amp=AmpOptimWrapper.__init__,
                        ddp=MMDistributedDataParallel.__init__, launch=dist_utils._init_dist_pytorch,
                        safe=len(torch.serialization.get_safe_globals()))

        plain = state()
        from ropevit.mm import runtime
        out = dict(after_import=runtime.active(), unchanged_by_import=state() == plain)
        runtime.enable()
        once = state()
        runtime.enable()
        out['idempotent'] = state() == once
        out['all_changed'] = all(once[k] is not plain[k] and once[k] != plain[k] for k in plain)
        out['active'] = runtime.active()
        runtime.disable('cpu_amp')
        out['partial'] = AmpOptimWrapper.__init__ is plain['amp'] and ckpt_mod.find_latest_checkpoint is once['find'][0]
        runtime.disable()
        runtime.disable()
        back = state()
        out['restored'] = back == plain and back['schemes'] is plain['schemes']
        import ropevit.mm.fixes
        out['fixes_module'] = runtime.active()
        try:
            runtime.enable('nope')
        except ValueError as e:
            out['unknown'] = str(e)
        print(json.dumps(out))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    everything = ['checkpoint_loading', 'latest_checkpoint', 'cpu_amp', 'cpu_dist']
    assert got['after_import'] == [] and got['unchanged_by_import'], got
    assert got['idempotent'] and got['all_changed'] and got['active'] == everything, got
    assert got['partial'] and got['restored'], got
    assert got['fixes_module'] == everything, got
    assert "'nope'" in got['unknown'] and 'cpu_amp' in got['unknown'], got


# ------------------------------------------------------------------------ ropevit's configs turn them on
def _runnable_configs() -> list[str]:
    paths = glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    paths += glob.glob(os.path.join(ROOT, 'projects', '*', 'configs', '**', '*.py'), recursive=True)
    return sorted(os.path.relpath(p, ROOT) for p in paths
                  if f'{os.sep}_base_{os.sep}' not in p and f'{os.sep}plugin_example{os.sep}' not in p)


@pytest.mark.parametrize('path', _runnable_configs())
def test_every_ropevit_config_turns_the_reliability_fixes_on(path):
    """Every runnable config of ropevit (the plug-in example shows the minimal adoption instead) imports
    ropevit.mm.fixes and names AtomicCheckpointHook and RNGStateHook: docs/RELIABILITY.md holds for a
    run of it under any train.py, not only ropevit's (which adds them when a config lacks them)."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, path), import_custom_modules=False)
    assert 'ropevit.mm.fixes' in cfg.custom_imports['imports'], cfg.custom_imports
    assert cfg.default_hooks['checkpoint']['type'] == 'AtomicCheckpointHook', cfg.default_hooks['checkpoint']
    assert [h['type'] for h in cfg.get('custom_hooks') or []].count('RNGStateHook') == 1, cfg.get('custom_hooks')


def test_the_plugin_example_is_the_minimal_adoption():
    """The plug-in configs register the modules only; their README gives the line that turns the
    fixes on, and the hook lines."""
    readme = open(os.path.join(ROOT, 'projects', 'plugin_example', 'README.md')).read()
    assert "custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes']" in readme
    assert "checkpoint=dict(type='AtomicCheckpointHook')" in readme and "dict(type='RNGStateHook')" in readme
