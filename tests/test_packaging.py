"""Packaging: the core (ropevit.layers / models / necks / checkpoint) is plain PyTorch and imports no
mm package; pyproject.toml declares what the core imports as dependencies and the mm stack as the
[mm] extra; `make setup` (requirements.txt) installs everything pyproject.toml declares."""
import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ('layers', 'models', 'necks', 'checkpoint')
MM_PACKAGES = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'pycocotools')
#: import name -> distribution name, for the core's third-party imports
CORE_IMPORTS = {'torch': 'torch', 'timm': 'timm', 'numpy': 'numpy'}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / 'pyproject.toml').read_text())


def _name(requirement: str) -> str:
    return re.split(r'[<>=!~\[; ]', requirement, maxsplit=1)[0].lower()


def test_core_imports_no_mm_package():
    code = ('import sys\n'
            'import ropevit.layers, ropevit.models, ropevit.necks, ropevit.checkpoint\n'
            f'print(sorted({{m for m in sys.modules if m.split(".")[0] in {MM_PACKAGES!r}}}))\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]', out.stdout


def test_core_module_level_imports_are_declared_dependencies():
    declared = {_name(r) for r in _pyproject()['project']['dependencies']}
    assert not declared & {'mmengine', 'mmdet', 'mmsegmentation', 'pycocotools'}
    found: dict[str, str] = {}
    for sub in CORE:
        for path in sorted((ROOT / 'ropevit' / sub).rglob('*.py')):
            for node in ast.parse(path.read_text()).body:     # module level: what `import` runs
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                for name in names:
                    top = name.split('.')[0]
                    if top != 'ropevit' and top not in sys.stdlib_module_names:
                        found[top] = str(path.relative_to(ROOT))
    assert set(found) <= set(CORE_IMPORTS), f'undeclared core imports: {found}'
    assert {CORE_IMPORTS[t] for t in found} <= declared


def test_mm_extra_and_setup_install_everything_declared():
    project = _pyproject()['project']
    extras = project['optional-dependencies']
    assert {'mm', 'mim', 'tests'} <= set(extras)
    assert {'mmengine', 'mmdet', 'mmsegmentation', 'pycocotools', 'six', 'ftfy', 'regex', 'terminaltables',
            'shapely', 'scipy', 'prettytable'} <= {_name(r) for r in extras['mm']}
    # make setup = tools/setup_env.sh: requirements.txt (pinned), then ropevit itself with --no-deps,
    # so requirements.txt must hold the core, [mm], [mim] and [tests]
    pinned = {_name(line) for line in (ROOT / 'requirements.txt').read_text().splitlines()
              if line.strip() and not line.startswith('#')}
    wanted = {_name(r) for r in project['dependencies'] + [r for e in extras.values() for r in e]}
    assert wanted <= pinned, f'declared but not installed by make setup: {sorted(wanted - pinned)}'
    setup = (ROOT / 'tools' / 'setup_env.sh').read_text()
    assert 'install -q -r requirements.txt' in setup and '--no-deps --no-build-isolation -e .' in setup
