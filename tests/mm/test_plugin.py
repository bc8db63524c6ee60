"""Plug-in experience: ropevit installs as a package, and configs outside the project use it
with ``custom_imports`` and a backbone swap only."""
from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


@pytest.fixture(scope='module')
def installed_venv(tmp_path_factory):
    """``(python, elsewhere)``: a fresh venv with ``pip install -e <checkout>``, and a directory
    outside the checkout to run from. Asserts ropevit was not importable before the install."""
    root = tmp_path_factory.mktemp('plugin')
    python = _layered_venv(str(root / 'venv'))
    elsewhere = root / 'elsewhere'
    elsewhere.mkdir()
    before = _run(python, 'import ropevit', cwd=str(elsewhere))
    assert before.returncode != 0 and 'ropevit' in before.stderr      # not visible before installing
    _pip(python, 'install', '--no-deps', '--no-build-isolation', '-e', ROOT, cwd=str(elsewhere))
    return python, elsewhere


@pytest.mark.timeout(120)
def test_editable_install_in_fresh_venv_imports_from_another_directory(installed_venv):
    python, elsewhere = installed_venv
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
    def name(r: str) -> str:
        return r.split(';')[0].split('<')[0].split('>')[0].split('=')[0].strip()

    hard = {name(r) for r in requires if 'extra ==' not in r}
    mm_extra = {name(r) for r in requires if 'extra == "mm"' in r}
    assert {'torch', 'timm'} <= hard   # the core is plain PyTorch; ropevit.mm needs the [mm] extra
    assert {'mmengine', 'mmdet', 'mmsegmentation'} <= mm_extra
    # mmcv must never be built by pip: only the `mim` extra names it
    assert 'mmcv' not in hard
    assert any(r.startswith('mmcv') and 'extra == "mim"' in r for r in requires)

    python = _layered_venv(str(tmp_path / 'venv'))
    _pip(python, 'install', '--no-deps', str(wheel), cwd=str(tmp_path))
    done = _run(python, 'import ropevit, ropevit.mm; print(ropevit.__file__)', cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / 'venv') in done.stdout                       # the installed copy, not the checkout


# --------------------------------------------------------------------------------------------
# outside-project configs: custom_imports + a backbone swap only
# --------------------------------------------------------------------------------------------
MM_CONFIGS = {   # plugin config -> the mm-series config it inherits
    'mask-rcnn_rope-swin-t-p4-w7_fpn_1x_coco.py': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    'upernet_rope-swin-t_8xb2-160k_ade20k-512x512.py':
        'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
}

# Runs in the fresh venv: ropevit is not imported before Config.fromfile, so only the config's
# custom_imports can register RoPESwin.
_BUILD_SCRIPT = r'''
import json, sys
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
assert not any(m == 'ropevit' or m.startswith('ropevit.') for m in sys.modules)
results = {}
for path in sys.argv[1:]:
    cfg = Config.fromfile(path)
    imported = 'ropevit.mm' in sys.modules
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None            # no weights on this machine
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 64, 96))
    results[path] = dict(
        imported_by_config=imported, scope=cfg.default_scope, model=type(model).__name__,
        backbone=type(model.backbone).__module__ + '.' + type(model.backbone).__name__,
        rope=model.backbone.rope_type, params=sum(p.numel() for p in model.backbone.parameters()),
        shapes=[list(f.shape) for f in feats])
print(json.dumps(results))
'''


def _load(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


def _plugin_and_base(name: str, base: str, tmp_path) -> tuple[dict, dict, dict, dict]:
    """The plug-in config and the mm config it inherits, as dicts without the parts the plug-in adds
    (checked here: ``custom_imports``, the optimizer's constructor), and their two backbones."""
    ours = _load(os.path.join(PLUGIN_CONFIGS, name)).to_dict()
    base_file = tmp_path / 'base.py'
    base_file.write_text(f'_base_ = {base!r}\n')
    theirs = _load(str(base_file)).to_dict()
    assert ours.pop('custom_imports') == dict(imports=['ropevit.mm'], allow_failed_imports=False)
    assert ours['optim_wrapper'].pop('constructor') == 'RoPEOptimWrapperConstructor'
    assert 'constructor' not in theirs['optim_wrapper']
    return ours, theirs, ours['model'].pop('backbone'), theirs['model'].pop('backbone')


@pytest.mark.parametrize('name', sorted(MM_CONFIGS))
def test_plugin_config_is_the_mm_config_with_a_backbone_swap(name, tmp_path):
    """Everything but ``custom_imports``, a few backbone keys and the optimizer's constructor equals
    the mm-series config: the recipe's lr, weight decay and custom_keys are inherited unchanged."""
    ours, theirs, ours_backbone, theirs_backbone = _plugin_and_base(name, MM_CONFIGS[name], tmp_path)
    assert ours == theirs
    changed = {k for k in set(ours_backbone) | set(theirs_backbone) if ours_backbone.get(k) != theirs_backbone.get(k)}
    assert changed <= {'type', 'rope', 'window_rule', 'init_cfg'}
    assert ours_backbone['type'] == 'RoPESwin' and theirs_backbone['type'] == 'SwinTransformer'


@pytest.mark.timeout(120)
def test_plugin_configs_build_in_fresh_venv_from_outside(installed_venv, tmp_path):
    """Copied to a folder outside the checkout, the configs build with custom_imports only."""
    python, elsewhere = installed_venv
    outside = tmp_path / 'my_mm_project' / 'configs'
    outside.mkdir(parents=True)
    paths = []
    for name in sorted(MM_CONFIGS):
        shutil.copy(os.path.join(PLUGIN_CONFIGS, name), outside / name)
        paths.append(str(outside / name))
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    done = subprocess.run([python, '-c', _BUILD_SCRIPT, *paths], cwd=str(elsewhere),
                          capture_output=True, text=True, env=env, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    # Swin-T RoPE-Mixed: mmdet's Swin-T (27,520,698) minus the 23,322 relative-position-bias
    # entries (169 x 138 heads), plus C frequencies per block (4,416)
    swin_t_mixed = 27_520_698 - 169 * (2 * 3 + 2 * 6 + 6 * 12 + 2 * 24) + (2 * 96 + 2 * 192 + 6 * 384 + 2 * 768)
    for path, scope, model in zip(paths, ('mmdet', 'mmseg'), ('MaskRCNN', 'EncoderDecoder')):
        r = results[path]
        assert r['imported_by_config'] and r['scope'] == scope and r['model'] == model
        assert r['backbone'] == 'ropevit.mm.swin.RoPESwin' and r['rope'] == 'mixed'
        assert r['params'] == swin_t_mixed
        assert r['shapes'] == [[1, 96, 16, 24], [1, 192, 8, 12], [1, 384, 4, 6], [1, 768, 2, 3]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize('tool_name', ['mmseg', 'ropevit'])
def test_tools_test_tta_runs_the_plugin_seg_config(tmp_path, tool_name):
    """``tools/test.py --tta`` (mmseg's own, and ropevit's through apply_tta) on the plugin config
    (shrunk to a tiny model) and a generated ADE20k-format set: SegTTAModel runs, mIoU is reported.
    mmseg's TTA recipe comes with the mmseg base."""
    import re

    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from test_tta import _make_ade_set

    data_root = _make_ade_set(tmp_path / 'ade', count=2, size=(48, 64))
    plugin = os.path.join(PLUGIN_CONFIGS, 'upernet_rope-swin-t_8xb2-160k_ade20k-512x512.py')
    config = tmp_path / 'tiny_plugin_seg.py'
    config.write_text(f"""
_base_ = [{plugin!r}]
model = dict(
    backbone=dict(init_cfg=None, embed_dims=32, depths=[2, 2], num_heads=[2, 4], strides=(4, 2),
                  out_indices=(0, 1)),
    decode_head=dict(in_channels=[32, 64], in_index=[0, 1], channels=32, pool_scales=(1, 2),
                     norm_cfg=dict(type='BN', requires_grad=True)),
    auxiliary_head=None)
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(data_root={data_root!r}))
default_hooks = dict(logger=dict(interval=1))
""")
    cfg = Config.fromfile(str(config))
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        model.decode_head.conv_seg.bias[3:] = -20.0      # predict among the set's 3 classes
    checkpoint = tmp_path / 'tiny.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, str(checkpoint))

    import mmseg
    tool = (os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'tools', 'test.py') if tool_name == 'mmseg'
            else os.path.join(ROOT, 'tools', 'test.py'))
    done = subprocess.run([sys.executable, tool, str(config), str(checkpoint), '--tta',
                           '--work-dir', str(tmp_path / 'work')],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=110)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    # the config the tool ran: model = SegTTAModel wrapping the segmentor
    model_block = re.search(r'^model = dict\(\n((?: .*\n)*)', log, re.M).group(1)
    assert "\n    type='SegTTAModel')" in model_block and '\n    module=dict(' in model_block
    miou = re.findall(r'mIoU: (\d+\.\d+)', log)
    assert miou and 0.0 < float(miou[-1]) <= 100.0


DINOV3_PLUGIN = ('upernet_dinov3-vit-b_8xb2-160k_ade20k-512x512.py',
                 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py')


def test_plugin_dinov3_config_is_mmseg_vit_upernet_with_the_backbone_swapped(tmp_path):
    """The README's three lines from an mmseg config: mmseg's ViT-B UperNet with a DINOv3 RoPEViT that
    has timm's DINOv3 ViT-B parameters and feeds mmseg's neck and heads the maps they expect."""
    import timm
    import torch
    from mmengine.registry import MODELS, init_default_scope
    name, base = DINOV3_PLUGIN
    ours, theirs, ours_backbone, theirs_backbone = _plugin_and_base(name, base, tmp_path)
    # mmseg's model-level weights (an AugReg ViT) would be handed to the backbone: switched off
    assert ours['model'].pop('pretrained') is None and theirs['model'].pop('pretrained')
    assert ours == theirs                                   # neck, heads, data, schedule: mmseg's
    assert theirs_backbone['type'] == 'VisionTransformer' and ours_backbone['type'] == 'RoPEViT'
    assert ours_backbone['out_indices'] == theirs_backbone['out_indices']

    import ropevit.mm  # noqa: F401
    cfg = _load(os.path.join(PLUGIN_CONFIGS, name))
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).eval()             # built, not initialised: the weights file is not here
    assert model.backbone.init_cfg == cfg.model.backbone.init_cfg
    ref = timm.create_model('vit_base_patch16_dinov3', pretrained=False, num_classes=0)
    assert sum(p.numel() for p in model.backbone.parameters()) == sum(p.numel() for p in ref.parameters())
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 64, 96))
        logits = model(torch.rand(1, 3, 64, 96), mode='tensor')
    assert [tuple(f.shape) for f in feats] == [(1, 768, 4, 6)] * 4
    assert tuple(logits.shape) == (1, 150, 16, 24)          # UperNet's stride-4 logits


def _readme_family_snippets() -> list[str]:
    """The README's ```python blocks that use a family preset from an mm-series config."""
    import re
    text = open(os.path.join(ROOT, 'README.md')).read()
    blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
    return [b for b in blocks if b.startswith("_base_ = 'mm") and 'preset=' in b]


def test_readme_family_snippets_build_and_give_the_maps_their_heads_expect(tmp_path):
    import torch
    from mmengine.registry import MODELS, init_default_scope
    import ropevit.mm  # noqa: F401
    snippets = _readme_family_snippets()
    assert len(snippets) == 2, snippets                   # the mmseg and the mmdet one
    for i, snippet in enumerate(snippets):
        path = tmp_path / f'snippet_{i}.py'
        path.write_text(snippet)
        cfg = _load(str(path))
        assert cfg.custom_imports.imports == ['ropevit.mm']
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model).eval()            # built, not initialised: the weights file is not here
        assert type(model.backbone).__name__ == 'RoPEViT' and model.backbone.num_prefix_tokens >= 1
        assert model.backbone.init_cfg == cfg.model.backbone.init_cfg   # the timm file, nothing else
        x = torch.rand(1, 3, 64, 96)
        with torch.no_grad():
            if cfg.default_scope == 'mmdet':
                shapes = [tuple(f.shape) for f in model.extract_feat(x)]     # SimpleFPN: strides 4 .. 64
                assert shapes == [(1, 256, 16, 24), (1, 256, 8, 12), (1, 256, 4, 6), (1, 256, 2, 3), (1, 256, 1, 2)]
            else:
                assert tuple(model(x, mode='tensor').shape) == (1, 150, 16, 24)
