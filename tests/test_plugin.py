"""Plug-in experience: ropevit installs as a package, and configs outside the project use it
with ``custom_imports`` and a backbone swap only."""
from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_CONFIGS = os.path.join(ROOT, 'projects', 'plugin_example', 'configs')


def _layered_venv(path: str) -> str:
    """A fresh venv whose only view of the stack is this environment's site-packages.

    The stack's directory goes in as a plain ``.pth`` line, so its own ``.pth`` files (among them
    the editable ropevit install of this checkout) are NOT processed: ``import ropevit`` fails in
    the new venv until ropevit is installed there. Nothing is downloaded.
    """
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', path], check=True)
    purelib = sysconfig.get_paths()['purelib']          # this environment's site-packages
    new_site = subprocess.run(
        [os.path.join(path, 'bin', 'python'), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(new_site, '_ropevit_test_stack.pth'), 'w') as f:
        f.write(purelib + '\n')
    return os.path.join(path, 'bin', 'python')


def _run(python: str, code: str, cwd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    return subprocess.run([python, '-c', code], cwd=cwd, capture_output=True, text=True, env=env)


def _pip(python: str, *args: str, cwd: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
    done = subprocess.run([python, '-m', 'pip', *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def _copy_source(dst: str) -> str:
    """The files a source distribution of ropevit carries (the package, pyproject, README)."""
    os.makedirs(dst)
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(os.path.join(ROOT, name), dst)
    shutil.copytree(os.path.join(ROOT, 'ropevit'), os.path.join(dst, 'ropevit'),
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    return dst


@pytest.mark.timeout(120)
def test_editable_install_in_fresh_venv_imports_from_another_directory(tmp_path):
    python = _layered_venv(str(tmp_path / 'venv'))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    before = _run(python, 'import ropevit', cwd=str(elsewhere))
    assert before.returncode != 0 and 'ropevit' in before.stderr      # not visible before installing

    _pip(python, 'install', '--no-deps', '--no-build-isolation', '-e', ROOT, cwd=str(elsewhere))
    done = _run(python, 'import ropevit, ropevit.mm; print(ropevit.__file__); print(ropevit.__version__)',
                cwd=str(elsewhere))
    assert done.returncode == 0, done.stderr
    path, version = done.stdout.split()
    assert os.path.realpath(path) == os.path.realpath(os.path.join(ROOT, 'ropevit', '__init__.py'))
    assert version == '0.1.0'
    # the mm layer is usable: ropevit.mm registered into mmengine's root registry
    reg = _run(python, 'import ropevit.mm, mmengine.registry as r; import ropevit.mm.tta; print("ok")',
               cwd=str(elsewhere))
    assert reg.returncode == 0 and reg.stdout.strip() == 'ok', reg.stderr


@pytest.mark.timeout(120)
def test_built_wheel_installs_and_declares_dependencies(tmp_path):
    src = _copy_source(str(tmp_path / 'src'))
    wheels = tmp_path / 'wheels'
    _pip(sys.executable, 'wheel', '--no-deps', '--no-build-isolation', '-w', str(wheels), src, cwd=str(tmp_path))
    (wheel,) = list(wheels.glob('ropevit-*.whl'))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_name = next(n for n in names if n.endswith('.dist-info/METADATA'))
        meta = email.message_from_bytes(zf.read(meta_name))
    assert {'ropevit/__init__.py', 'ropevit/mm/__init__.py', 'ropevit/mm/tta.py'} <= names
    assert not any(n.startswith(('tests/', 'tools/', 'configs/')) for n in names)
    requires = meta.get_all('Requires-Dist')
    hard = {r.split(';')[0].split('<')[0].split('>')[0].split('=')[0].strip() for r in requires if 'extra ==' not in r}
    assert {'torch', 'timm', 'mmengine', 'mmdet', 'mmsegmentation'} <= hard
    # mmcv must never be built by pip: only the `mim` extra names it
    assert 'mmcv' not in hard
    assert any(r.startswith('mmcv') and 'extra == "mim"' in r for r in requires)

    python = _layered_venv(str(tmp_path / 'venv'))
    _pip(python, 'install', '--no-deps', str(wheel), cwd=str(tmp_path))
    done = _run(python, 'import ropevit, ropevit.mm; print(ropevit.__file__)', cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / 'venv') in done.stdout                       # the installed copy, not the checkout
