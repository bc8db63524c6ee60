"""Bad input through the real command-line tools (issue 19): every case runs ``tools/*.py`` in a
subprocess on small generated data and checks the exit code, that the error is ONE line naming the
value or file (and the fix), and that no input file changed (hashes before and after).

Grouped by fuzz category: config values, checkpoints, images, annotations, CLI, data safety.
docs/RELIABILITY.md section 4 lists every case with its message and the test id here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import demo_helpers as demo

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TOOLS = ROOT / 'tools'


# ------------------------------------------------------------------------------------------ helpers
def _run(args, cwd: Path, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in demo.env().items() if k != 'ROPEVIT_DEBUG' and not k.startswith(('OMPI_', 'SLURM_'))}
    for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        e.pop(k, None)   # as a plain shell would start the tool (not under torchrun)
    e.update(env)
    return subprocess.run([PY, *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True, timeout=240)


def _hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob('*') if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _error_line(r: subprocess.CompletedProcess) -> str:
    """The error must be the last line on stderr, the only one starting with an error marker, and
    come without a traceback."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines, (r.stdout[-2000:], r.stderr)
    assert 'Traceback' not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in lines if ln.startswith('error:') or ': error: ' in ln]
    assert len(errors) == 1 and errors[0] == lines[-1], lines[-5:]
    return lines[-1]


def _check(r, rc: int, words, what_changed: dict, before: dict) -> str:
    assert r.returncode == rc, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    line = _error_line(r)
    for w in words:
        assert w in line, (w, line)
    assert 'weights_only' not in r.stderr + r.stdout   # torch's unsafe advice is never passed on
    assert _hashes(*what_changed) == before, 'an input file changed'
    return line


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """Generated COCO data, the shrunk demo config, a backbone checkpoint, and a real 1-epoch run
    (``--resume`` on an empty work dir, the README's ``init_cfg.checkpoint`` option on the demo
    config, whose init_cfg is None) whose epoch_1.pth is the good whole-model checkpoint."""
    tmp = tmp_path_factory.mktemp('bad_input_tools')
    data = demo.make_coco(tmp / 'data')
    config = _config(tmp, data)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    import ropevit.mm  # noqa: F401
    model = MODELS.build(Config.fromfile(str(config)).model)
    ckpts = tmp / 'ckpts'
    ckpts.mkdir()
    torch.save({'state_dict': model.backbone.state_dict()}, ckpts / 'backbone.pth')
    work = tmp / 'work'
    r = _run([TOOLS / 'train.py', config, '--work-dir', work, '--resume',
              '--cfg-options', f'model.backbone.init_cfg.checkpoint={ckpts / "backbone.pth"}'], tmp)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    good = work / 'epoch_1.pth'
    sd = torch.load(good, map_location='cpu', weights_only=False)
    torch.save({'state_dict': {k: v for k, v in sd['state_dict'].items() if not k.startswith('roi_head.mask_head')},
                'meta': sd['meta']}, ckpts / 'nomask.pth')
    torch.save({'state_dict': {k[9:]: v for k, v in sd['state_dict'].items() if k.startswith('backbone.')}},
               ckpts / 'backbone_only.pth')
    (ckpts / 'random.pth').write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({'state_dict': {}, 'meta': _Payload()}, ckpts / 'code.pth')
    return dict(tmp=tmp, data=data, config=config, work=work, good=good, ckpts=ckpts, train_log=r.stdout)


def _config(tmp: Path, data: Path) -> Path:
    path = demo.tiny_config(tmp, data, max_epochs=1)
    path.write_text(path.read_text() + f"\ntest_evaluator = dict(ann_file={str(data / 'annotations/instances_val2017.json')!r})\n")
    return path


class _Payload:
    def __reduce__(self):
        return (os.system, (f'touch {os.environ.get("ROPEVIT_PWNED", "/nonexistent/pwned")}',))


def _inputs(env) -> list[Path]:
    return [env['data'], env['config'], env['ckpts'], env['good']]


def test_readme_init_cfg_option_and_resume_on_empty_work_dir(env):
    """The fixture's run: the README's --cfg-options model.backbone.init_cfg.checkpoint=... works on the
    demo config (init_cfg=None there), and --resume on an empty work dir says, as a WARNING, that
    the run starts from scratch (not INFO "resumed from None")."""
    log = env['train_log']
    assert 'WARNING - --resume: no checkpoint in the work dir' in log and 'starts from scratch' in log
    assert 'resumed from the latest checkpoint None' not in log
    assert 'backbone.pth' in log  # mmengine logs the Pretrained init of the backbone from that file


# ---------------------------------------------------------------------------------- config values
CONFIG_CASES = {
    'syntax_error': (['BAD'], ['bad.py', 'line 2', 'syntax error']),
    'pretrained_int': (['--cfg-options', 'model.backbone.pretrained=123'], ['model.backbone.pretrained=123', 'str']),
    'unknown_rope': (['--cfg-options', 'model.backbone.rope=rotary'], ["rope='rotary'", "'axial'", "'mixed'"]),
    'init_cfg_file_missing': (['--cfg-options', 'model.backbone.init_cfg.checkpoint=nope.pth'],
                              ["'nope.pth' does not exist", 'init_cfg']),
    'option_into_none': (['--cfg-options', 'val_cfg.x=1'], ['val_cfg is None', "'x'"]),
}


@pytest.mark.parametrize('case', list(CONFIG_CASES))
def test_config_values(env, case):
    args, words = CONFIG_CASES[case]
    config = env['config']
    if args == ['BAD']:
        config = env['tmp'] / 'bad.py'
        config.write_text('_base_ = []\nmodel = dict(type="MaskRCNN"\n')
        args = []
    before = _hashes(*_inputs(env))
    r = _run([TOOLS / 'train.py', config, '--work-dir', env['tmp'] / f'w_{case}', *args], env['tmp'])
    line = _check(r, 2, words, _inputs(env), before)
    assert str(config.name) in line or 'config' in line
    assert not (env['tmp'] / f'w_{case}').exists() or not list((env['tmp'] / f'w_{case}').rglob('*.pth'))


# ------------------------------------------------------------------------------------ checkpoints
def _ck(env, name):
    return env['ckpts'] / name


CKPT_CASES = {
    'test_random_bytes': ('test', 'random.pth', ['random.pth', 'truncated or not a torch checkpoint']),
    'test_code_pickle': ('test', 'code.pth', ['code.pth', 'could run code', 'system']),
    'test_missing_head': ('test', 'nomask.pth', ['nomask.pth', 'missing 6 keys', 'roi_head.mask_head',
                                                 '--allow-partial-load']),
    'test_backbone_only': ('test', 'backbone_only.pth', ['backbone_only.pth', 'backbone checkpoint',
                                                         'init_cfg', 'neck']),
    'train_load_from_mismatch': ('load_from', 'nomask.pth', ['nomask.pth', 'roi_head.mask_head']),
    'train_resume_mismatch': ('resume', 'nomask.pth', ['nomask.pth', 'roi_head.mask_head']),
    'infer_mismatch': ('infer', 'nomask.pth', ['nomask.pth', 'roi_head.mask_head']),
    'convert_random_bytes': ('convert', 'random.pth', ['random.pth', 'truncated or not a torch checkpoint']),
}


@pytest.mark.parametrize('case', list(CKPT_CASES))
def test_checkpoints(env, case, tmp_path, monkeypatch):
    tool, name, words = CKPT_CASES[case]
    marker = tmp_path / 'pwned'
    ck = _ck(env, name)
    cfg, w = env['config'], tmp_path / 'w'
    cmd = {'test': [TOOLS / 'test.py', cfg, ck, '--work-dir', w],
           'load_from': [TOOLS / 'train.py', cfg, '--work-dir', w, '--cfg-options', f'load_from={ck}'],
           'resume': [TOOLS / 'train.py', cfg, '--work-dir', w, '--resume', ck],
           'infer': [TOOLS / 'infer.py', cfg, ck, env['data'] / 'val2017', '--out-dir', tmp_path / 'vis'],
           'convert': [TOOLS / 'convert_checkpoint.py', '--model', 'swin', ck, tmp_path / 'out.pth']}[tool]
    before = _hashes(*_inputs(env))
    r = _run(cmd, env['tmp'], ROPEVIT_PWNED=str(marker))
    _check(r, 2, words, _inputs(env), before)
    assert not marker.exists(), 'the pickled payload ran'
    assert not list(tmp_path.rglob('*.pth')) and not list(tmp_path.rglob('*.png'))  # nothing written


def test_partial_load_is_explicit_and_warns(env, tmp_path):
    """--allow-partial-load: the same checkpoint is evaluated, with a WARNING naming the keys."""
    r = _run([TOOLS / 'test.py', env['config'], _ck(env, 'nomask.pth'), '--work-dir', tmp_path,
              '--allow-partial-load'], env['tmp'])
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [ln for ln in r.stdout.splitlines() if 'WARNING' in ln and 'nomask.pth' in ln]
    assert warn and 'roi_head.mask_head.conv_logits.weight' in warn[0] and 'keep their initial values' in warn[0]
    assert 'coco/bbox_mAP' in r.stdout


# ----------------------------------------------------------------------------------------- images
def _broken_copy(env, tmp_path: Path, split: str) -> tuple[Path, Path]:
    data = tmp_path / 'data'
    shutil.copytree(env['data'], data)
    bad = sorted((data / split).glob('*.jpg'))[1]
    bad.write_bytes(b'this is not a JPEG')
    return _config(tmp_path, data), bad


def test_infer_names_undecodable_images_and_draws_the_others(env, tmp_path):
    imgs = tmp_path / 'imgs'
    imgs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(imgs / 'a.jpg')
    (imgs / 'b.png').write_bytes(b'not a png')
    (imgs / 'c.jpg').write_bytes(b'')
    before = _hashes(imgs, *_inputs(env))
    r = _run([TOOLS / 'infer.py', env['config'], env['good'], imgs, '--out-dir', tmp_path / 'vis',
              '--score-thr', '0'], env['tmp'])
    line = _check(r, 1, ['2 of 3 images', 'b.png', 'cannot identify image file', 'c.jpg', 'empty file'],
                  [imgs, *_inputs(env)], before)
    assert 'imgs/b.png' in line and 'imgs/c.jpg' in line
    assert sorted(p.name for p in (tmp_path / 'vis').iterdir()) == ['a.png']   # the good one is drawn
    assert np.asarray(Image.open(tmp_path / 'vis' / 'a.png')).shape[:2] == (48, 64)


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_undecodable_image_in_data_set_is_named(env, tmp_path, tool):
    config, bad = _broken_copy(env, tmp_path, 'train2017' if tool == 'train' else 'val2017')
    before = _hashes(tmp_path / 'data', *_inputs(env))
    cmd = ([TOOLS / 'train.py', config, '--work-dir', tmp_path / 'w'] if tool == 'train' else
           [TOOLS / 'test.py', config, env['good'], '--work-dir', tmp_path / 'w'])
    _check(_run(cmd, tmp_path), 2, [str(bad), 'cannot be decoded', 'cannot identify image file'],
           [tmp_path / 'data', *_inputs(env)], before)
    assert not list((tmp_path / 'w').rglob('*.pth'))


# ------------------------------------------------------------------------------------ annotations
def _exif_image(data: Path, ann: dict) -> None:
    """Image 1 re-saved with EXIF orientation 6 (rotate 90 on display); the json keeps the stored size."""
    info = ann['images'][0]
    path = data / 'train2017' / info['file_name']
    pixels = np.asarray(Image.open(path).convert('RGB'))[:, : info['width'] // 2]   # stored W x H = 32 x 64
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, exif=exif.tobytes())
    info['width'], info['height'] = pixels.shape[1], pixels.shape[0]
    for a in ann['annotations']:   # keep its masks consistent with the stored size
        if a['image_id'] == info['id'] and isinstance(a['segmentation'], dict):
            a['segmentation'] = [[0, 0, 4, 0, 4, 4]]


def _rle_of_other_size(data: Path, ann: dict) -> None:
    from pycocotools import mask as mask_utils
    m = np.zeros((10, 12), np.uint8, order='F')
    m[2:5, 2:6] = 1
    rle = mask_utils.encode(m)
    rle['counts'] = rle['counts'].decode()
    ann['annotations'][0].update(segmentation=rle, iscrowd=1)


ANN_CASES = {
    'duplicate_image_ids': (lambda d, a: a['images'][1].update(id=a['images'][0]['id']),
                            ['lists image ids more than once', 'own id']),
    'unknown_category_id': (lambda d, a: a['annotations'][0].update(category_id=77),
                            ['category ids 77', 'not in its "categories"']),
    'empty_categories': (lambda d, a: a.update(categories=[]), ['empty "categories"']),
    'json_size_differs': (lambda d, a: a['images'][0].update(width=999),
                          ['decodes as 64x64', 'says 999x64', 'width/height']),
    'rle_of_other_size': (_rle_of_other_size, ['RLE mask of size [10, 12]', '[64, 64]']),
    'exif_orientation': (_exif_image, ['EXIF orientation 6', "color_type='color_ignore_orientation'"]),
}


@pytest.mark.parametrize('case', list(ANN_CASES))
def test_annotations_contradicting_data(env, tmp_path, case):
    modify, words = ANN_CASES[case]
    data = tmp_path / 'data'
    shutil.copytree(env['data'], data)
    ann_path = data / 'annotations' / 'instances_train2017.json'
    ann = json.loads(ann_path.read_text())
    modify(data, ann)
    ann_path.write_text(json.dumps(ann))
    config = _config(tmp_path, data)
    before = _hashes(data, *_inputs(env))
    r = _run([TOOLS / 'train.py', config, '--work-dir', tmp_path / 'w'], tmp_path)
    line = _check(r, 2, words, [data, *_inputs(env)], before)
    assert 'instances_train2017.json' in line
    assert not (tmp_path / 'w').exists() or not list((tmp_path / 'w').rglob('*.pth'))


SEG_CASES = {
    'rgb_label_map': (lambda a: np.stack([a] * 3, -1), ['is RGB', 'single-channel']),
    'label_map_of_other_size': (lambda a: a[:-2], ['label map', 'must be the same size']),
    'label_above_num_classes': (lambda a: np.where(a == a.max(), 200, a).astype(np.uint8),
                                ['values 200', '150 classes', '255 (ignore)']),
}


@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    from ropevit.data.synthetic_ade import make_synthetic_ade
    return make_synthetic_ade(tmp_path_factory.mktemp('ade') / 'ade', num_train=3, num_val=2, image_size=(32, 48))


@pytest.mark.parametrize('case', list(SEG_CASES))
def test_seg_label_maps_contradicting_images(ade, tmp_path, case):
    modify, words = SEG_CASES[case]
    data = tmp_path / 'ade'
    shutil.copytree(ade, data)
    label = sorted((data / 'annotations' / 'training').glob('*.png'))[0]
    Image.fromarray(modify(np.asarray(Image.open(label)))).save(label)
    config = tmp_path / 'seg.py'
    config.write_text(f"_base_ = {str(ROOT / 'configs/demo/upernet_rope_swin_demo_seg.py')!r}\n"
                      f"train_dataloader = dict(dataset=dict(data_root={str(data)!r}))\n"
                      f"val_dataloader = dict(dataset=dict(data_root={str(data)!r}))\n"
                      f"test_dataloader = val_dataloader\n")
    before = _hashes(data)
    r = _run([TOOLS / 'train.py', config, '--work-dir', tmp_path / 'w'], tmp_path)
    _check(r, 2, [str(label), *words], [data], before)


# -------------------------------------------------------------------------------------------- CLI
CLI_CASES = {
    'cfg_options_without_equals': (['train.py', 'CFG', '--cfg-options', 'nonsense'],
                                   ["'nonsense' is not KEY=VALUE", '--cfg-options']),
    'launcher_pytorch_without_torchrun': (['train.py', 'CFG', '--launcher', 'pytorch'],
                                          ['--launcher pytorch', 'RANK', 'torchrun']),
    'launcher_mpi_without_mpirun': (['train.py', 'CFG', '--launcher', 'mpi'],
                                    ['--launcher mpi', 'OMPI_COMM_WORLD_LOCAL_RANK', 'mpirun']),
    'config_not_found': (['test.py', 'missing_config.py', 'GOOD'], ["config file not found: 'missing_config.py'"]),
    'test_out_not_pickle': (['test.py', 'CFG', 'GOOD', '--out', 'results.json'], ['.pkl']),
    'infer_bad_score_thr': (['infer.py', 'CFG', 'GOOD', 'DATA', '--score-thr', '2'], ['--score-thr', '2.0']),
    'convert_arch_not_json': (['convert_checkpoint.py', '--model', 'vit', 'GOOD', 'OUT', '--arch', '{bad'],
                              ["--arch '{bad'", 'JSON']),
}


@pytest.mark.parametrize('case', list(CLI_CASES))
def test_command_line(env, tmp_path, case):
    args, words = CLI_CASES[case]
    subst = {'CFG': env['config'], 'GOOD': env['good'], 'DATA': env['data'] / 'val2017', 'OUT': tmp_path / 'o.pth'}
    cmd = [TOOLS / args[0], *[subst.get(a, a) for a in args[1:]]]
    before = _hashes(*_inputs(env))
    r = _run(cmd + ['--work-dir', tmp_path / 'w'] if args[0] in ('train.py', 'test.py') else cmd, env['tmp'])
    _check(r, 2, words, _inputs(env), before)


def test_debug_shows_the_traceback(env):
    cmd = [TOOLS / 'train.py', env['config'], '--work-dir', env['work']]   # refused: holds checkpoints
    for extra, environ in (([], {'ROPEVIT_DEBUG': '1'}), (['--debug'], {})):
        r = _run(cmd + extra, env['tmp'], **environ)
        assert r.returncode != 0 and 'Traceback' in r.stderr and 'already holds checkpoints' in r.stderr


# ------------------------------------------------------------------------------------ data safety
def test_convert_refuses_src_equal_dst(env):
    src = _ck(env, 'backbone.pth')
    before = _hashes(src)
    for dst in (src, src.parent / '.' / src.name):
        r = _run([TOOLS / 'convert_checkpoint.py', '--model', 'swin', src, dst], env['tmp'])
        _check(r, 2, ['SRC and DST are the same file', 'backbone.pth'], [src], before)


def test_convert_writes_atomically(env, tmp_path):
    dst = tmp_path / 'converted.pth'
    r = _run([TOOLS / 'convert_checkpoint.py', '--model', 'swin', _ck(env, 'backbone.pth'), dst], env['tmp'])
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['converted.pth']  # no temporary file left
    assert torch.load(dst, weights_only=True)['state_dict'].keys() == \
        torch.load(_ck(env, 'backbone.pth'), weights_only=True)['state_dict'].keys()


@pytest.mark.parametrize('case', ['out_dir_is_input_folder', 'two_inputs_one_output', 'test_out_is_checkpoint'])
def test_outputs_never_land_on_inputs(env, tmp_path, case):
    imgs = tmp_path / 'imgs'
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for name in ('a.jpg', 'a.png'):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(imgs / name)
    before = _hashes(imgs, *_inputs(env))
    if case == 'out_dir_is_input_folder':
        (imgs / 'a.png').unlink()
        before = _hashes(imgs, *_inputs(env))
        cmd, words = [TOOLS / 'infer.py', env['config'], env['good'], imgs, '--out-dir', imgs], ['holds the input image']
    elif case == 'two_inputs_one_output':
        cmd, words = ([TOOLS / 'infer.py', env['config'], env['good'], imgs, '--out-dir', tmp_path / 'vis'],
                      ['a.jpg', 'a.png', "would both be drawn to"])
    else:
        copy = tmp_path / 'model.pkl'
        shutil.copy(env['good'], copy)
        before = _hashes(copy, *_inputs(env))
        imgs = copy
        cmd, words = [TOOLS / 'test.py', env['config'], copy, '--out', copy, '--work-dir', tmp_path / 'w'], \
            ['--out', 'model.pkl', 'is the input']
    r = _run(cmd, env['tmp'])
    _check(r, 2, words, [imgs, *_inputs(env)], before)
    assert not (tmp_path / 'vis').exists()


def test_new_run_in_a_work_dir_with_checkpoints_is_refused(env):
    """Without --resume, a work dir holding checkpoints is refused; last_checkpoint keeps its target."""
    work = env['work']
    before = _hashes(work, *_inputs(env))
    r = _run([TOOLS / 'train.py', env['config'], '--work-dir', work], env['tmp'])
    _check(r, 2, [str(work.name), 'already holds checkpoints', 'epoch_1.pth', '--resume', '--work-dir'],
           [work, *_inputs(env)], before)
