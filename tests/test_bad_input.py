"""Bad input: each case gives a clear error (what was wrong, what is allowed) or a correct result, and
leaves no partial output behind. The data-set and command-line cases are at the end of the file."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

import ropevit.mm  # noqa: F401  (registers the backbones)
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import _load_checkpoint

from ropevit.checkpoint.common import CheckpointMismatchError
from ropevit.checkpoint.io import UnsafeCheckpointError, load_checkpoint_file
from ropevit.models.swin import RoPESwin
from ropevit.models.vit import RoPEViT
from ropevit.mm import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VIT = dict(arch=dict(embed_dims=32, num_heads=2, depth=2), patch_size=4, with_cls_token=False,
                out_indices=(1,))
TINY_SWIN = dict(embed_dims=32, depths=(1, 1), num_heads=(2, 4), window_size=4, out_indices=(0, 1),
                 drop_path_rate=0.0)


# --------------------------------------------------------------------------------- model options
@pytest.mark.parametrize('kwargs, names', [
    (dict(rope='rotary'), ["'rotary'", "'axial'", "'mixed'", "'none'"]),
    (dict(arch='huge'), ["'huge'", "'tiny'", "'small'", "'base'"]),
    (dict(embed_dims=30, num_heads=(4, 8)), ['30', 'not divisible by 4']),
    (dict(embed_dims=36, num_heads=(2, 4)), ['head_dim=18', 'divisible by 4']),  # RoPE needs x and y pairs
    (dict(window_size=0), ['window_size=0', 'positive']),
])
def test_swin_bad_options_name_value_and_allowed(kwargs, names):
    cfg = dict(TINY_SWIN, **kwargs)
    for build in (lambda: RoPESwin(**cfg), lambda: MODELS.build(dict(type='RoPESwin', **cfg))):
        with pytest.raises(ValueError) as e:
            build()
        for n in names:
            assert n in str(e.value), (n, str(e.value))


@pytest.mark.parametrize('kwargs, names', [
    (dict(rope='rotary'), ["'rotary'", "'axial'", "'mixed'", "'none'"]),
    (dict(arch='huge'), ["'huge'", "'small'", "'base'", "'large'"]),
    (dict(arch=dict(embed_dims=30, num_heads=4, depth=2)), ['embed_dims=30', 'num_heads=4']),
    (dict(arch=dict(embed_dims=40, num_heads=4, depth=2)), ['head_dim=10', 'divisible by 4']),
    (dict(num_reg_tokens=-1), ['num_reg_tokens=-1', '>= 0']),
    (dict(window_size=-1), ['window_size=-1', '>= 0']),
])
def test_vit_bad_options_name_value_and_allowed(kwargs, names):
    cfg = dict(TINY_VIT, **kwargs)
    assert 'RoPEViT' in MODELS.module_dict  # registered by ropevit.mm.vit (imported above)
    for build in (lambda: RoPEViT(**cfg), lambda: MODELS.build(dict(type='RoPEViT', **cfg))):
        with pytest.raises(ValueError) as e:
            build()
        for n in names:
            assert n in str(e.value), (n, str(e.value))


def test_vit_arch_dict_with_mlp_ratio_is_accepted():
    """The arch error message offers `embed_dims, num_heads, depth[, mlp_ratio]`: a dict that gives
    mlp_ratio must build (not fail with dict()'s "got multiple values for keyword argument")."""
    model = RoPEViT(**dict(TINY_VIT, arch=dict(embed_dims=32, num_heads=2, depth=2, mlp_ratio=2.0)))
    assert tuple(model.blocks[0].mlp.fc1.weight.shape) == (64, 32)  # hidden = 2.0 x 32


@pytest.mark.parametrize('rope', ['mixed', 'axial'])
def test_vit_window_larger_than_grid_equals_global_attention(rope):
    """RoPE-ViT pads the token grid to a window multiple and masks padded keys, so a window larger
    than the grid is one window over the whole grid: exactly global attention."""
    glob = RoPEViT(**TINY_VIT, rope=rope, window_size=0).eval()
    large = RoPEViT(**TINY_VIT, rope=rope, window_size=20).eval()   # grid 8 x 8, window 20 x 20
    large.load_state_dict(glob.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(large(x)[0], glob(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('hw', [(16, 2000), (2000, 16), (8, 8), (1, 1), (5, 37)])
def test_vit_extreme_and_tiny_images(hw):
    model = RoPEViT(**TINY_VIT, window_size=4, global_attn_indexes=(1,)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))[0]
    assert tuple(out.shape) == (1, 32, -(-hw[0] // 4), -(-hw[1] // 4)) and torch.isfinite(out).all()


def test_swin_window_larger_than_grid_is_one_masked_window():
    """RoPE-Swin pads the grid to a window multiple and masks the padding out of attention, so a
    window larger than the feature map is allowed: it equals one window exactly covering the map
    (RoPE only sees relative offsets, the masked padding is never attended)."""
    one_stage = dict(embed_dims=32, depths=(1,), num_heads=(2,), out_indices=(0,), drop_path_rate=0.0)
    exact = RoPESwin(**one_stage, window_size=8).eval()    # 32 px / patch 4 = an 8 x 8 grid
    large = RoPESwin(**one_stage, window_size=20).eval()   # padded to 20 x 20, 336 of 400 keys masked
    large.load_state_dict(exact.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = exact(x)[0], large(x)[0]
    assert a.shape == b.shape == (2, 32, 8, 8)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    # Also through every stage of a deeper model (shifted windows included): finite, right shapes.
    model = RoPESwin(**dict(TINY_SWIN, window_size=12)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 24, 24))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 6, 6), (1, 64, 3, 3)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('hw', [(16, 2000), (2000, 16), (8, 8), (1, 1), (5, 37)])
def test_swin_extreme_and_tiny_images(hw):
    """Any H, W: the patch embedding and every merge pad (ceil), windows pad and mask."""
    h, w = hw
    model = RoPESwin(**TINY_SWIN).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    h0, w0 = -(-h // 4), -(-w // 4)
    assert tuple(outs[0].shape) == (1, 32, h0, w0)
    assert tuple(outs[1].shape) == (1, 64, -(-h0 // 2), -(-w0 // 2))
    assert all(torch.isfinite(o).all() for o in outs)


# ----------------------------------------------------------------------------------- checkpoints
def _pretrained_swin(path, **kw):
    return MODELS.build(dict(type='RoPESwin', **dict(TINY_SWIN, **kw),
                             init_cfg=dict(type='Pretrained', checkpoint=str(path))))


def test_checkpoint_for_another_architecture_lists_keys(tmp_path):
    """A ViT checkpoint (timm's layout) given to RoPE-Swin: the error names expected and found keys."""
    import timm
    vit = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0)
    path = tmp_path / 'vit.pth'
    torch.save({'state_dict': vit.state_dict()}, str(path))
    with pytest.raises(CheckpointMismatchError) as e:
        _pretrained_swin(path).init_weights()
    msg = str(e.value)
    assert str(path) in msg
    assert 'stages.0.blocks.0' in msg or 'patch_embed.projection' in msg  # what RoPESwin expects
    assert 'blocks.0.attn.qkv' in msg or 'cls_token' in msg                 # what the file holds


def test_checkpoint_of_another_size_names_key_and_shapes(tmp_path):
    path = tmp_path / 'swin48.pth'
    torch.save({'state_dict': RoPESwin(**dict(TINY_SWIN, embed_dims=48)).state_dict()}, str(path))
    with pytest.raises(CheckpointMismatchError) as e:
        _pretrained_swin(path).init_weights()
    msg = str(e.value)
    assert 'patch_embed.projection.weight' in msg and '(48, 3, 4, 4)' in msg and '(32, 3, 4, 4)' in msg


@pytest.fixture
def checkpoint_loading_fix():
    """mmengine's loader routed through ropevit's safe one, as ropevit's tools and configs
    (``'ropevit.mm.fixes'``) turn it on."""
    was_on = 'checkpoint_loading' in runtime.active()
    runtime.enable('checkpoint_loading')
    yield
    if not was_on:
        runtime.disable('checkpoint_loading')


@pytest.fixture
def good_checkpoint(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save({'state_dict': nn.Linear(128, 128).state_dict(), 'meta': {'iter': 1}}, str(path))
    return path


@pytest.mark.parametrize('cut', ['empty', 'header', 'half', 'tail'] + [f'garbage{seed}' for seed in range(12)])
def test_truncated_or_corrupt_checkpoint_is_a_clear_error(tmp_path, good_checkpoint, cut, checkpoint_loading_fix):
    """Every way a file can be cut or corrupted: RuntimeError naming the file and the likely cause,
    through ropevit's loader and mmengine's (load_from / resume / init_cfg). Random bytes fail the
    unpickler in many ways (EOFError, IndexError, KeyError, ...): twelve fixed seeds, so a failure
    reproduces."""
    data = good_checkpoint.read_bytes()
    bad = tmp_path / f'{cut}.pth'
    if cut.startswith('garbage'):
        blob = np.random.default_rng(int(cut[len('garbage'):])).bytes(4096)
    else:
        blob = {'empty': b'', 'header': data[:100], 'half': data[:len(data) // 2], 'tail': data[:-10]}[cut]
    bad.write_bytes(blob)
    for load in (lambda: load_checkpoint_file(bad), lambda: _load_checkpoint(str(bad), map_location='cpu')):
        with pytest.raises(RuntimeError, match='truncated or not a torch checkpoint') as e:
            load()
        assert str(bad) in str(e.value)
        assert 'weights_only' not in str(e.value), 'repeats torch\'s unsafe advice'


class _Payload:
    def __reduce__(self):
        return (os.system, (f'touch {os.environ["ROPEVIT_PWNED"]}',))


def test_checkpoint_holding_code_is_refused_not_run(tmp_path, monkeypatch):
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('ROPEVIT_PWNED', str(marker))
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': RoPESwin(**TINY_SWIN).state_dict(), 'meta': _Payload()}, str(path))
    with pytest.raises(UnsafeCheckpointError, match='could run code') as e:
        _pretrained_swin(path).init_weights()
    assert f'refused to load {path}: it contains a pickled object (posix.system)' in str(e.value)  # names it
    assert not marker.exists(), 'the pickled payload ran'


# ------------------------------------------------------------------ data sets and inference (demo config)
def _error_text(stderr: str) -> str:
    """What the user reads last: tools/train.py's ``error: ...`` block, else the final exception line."""
    if 'error: ' in stderr:
        return stderr[stderr.rindex('error: '):]
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ''


@pytest.mark.parametrize('case', ['missing_dir', 'no_images', 'unreadable_image'])
def test_bad_data_set_is_a_clear_error_and_leaves_no_checkpoint(tmp_path, case):
    """tools/train.py on the demo config with a broken data set: a non-zero exit whose message names
    the offending path and the problem, and no checkpoint (nothing resume could pick up)."""
    import json

    import demo_helpers as demo
    root = tmp_path / 'data'
    if case == 'missing_dir':
        bad = root
        expect = ('does not exist', 'instances_train2017.json')  # what is missing, the layout expected
    else:
        demo.make_coco(root)
        if case == 'no_images':
            bad = root / 'annotations' / 'instances_train2017.json'
            ann = json.loads(bad.read_text())
            ann['images'], ann['annotations'] = [], []
            bad.write_text(json.dumps(ann))
            expect = ('image',)
        else:
            bad = sorted((root / 'train2017').glob('*.jpg'))[1]
            bad.write_bytes(b'this is not a JPEG')
            expect = ()
    config = demo.tiny_config(tmp_path, root)
    work = tmp_path / 'work'
    r = demo.train(config, work)
    assert r.returncode != 0, (r.stdout + r.stderr)[-3000:]
    err = _error_text(r.stderr)
    assert str(bad) in err, err
    assert 'need at least one array' not in err  # numpy's message is not an explanation
    for word in expect:
        assert word in err.lower(), (word, err)
    assert not list(work.rglob('*.pth')) and not (work / 'last_checkpoint').exists()


@pytest.mark.parametrize('hw', [(16, 2000), (2000, 16), (8, 8)])
def test_detector_inference_on_extreme_and_tiny_images(tmp_path, hw):
    """The demo detector (tiny, random init, score threshold 0 so it returns boxes) on images of
    extreme aspect ratio and tiny size: boxes inside the original image, masks of its size, finite
    scores."""
    import numpy as np
    from mmdet.apis import inference_detector, init_detector

    import demo_helpers as demo
    config = demo.tiny_config(tmp_path, tmp_path / 'unused')
    model = init_detector(str(config), checkpoint=None, device='cpu',
                          cfg_options={'model.test_cfg.rcnn.score_thr': 0.0})
    h, w = hw
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    pred = inference_detector(model, image).pred_instances
    assert len(pred.bboxes) > 0
    boxes = pred.bboxes
    assert torch.isfinite(boxes).all() and torch.isfinite(pred.scores).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()
    # Mask R-CNN always predicts a mask per box, pasted into the original image's frame.
    assert 'masks' in pred, pred.keys()
    assert pred.masks.dtype == torch.bool and tuple(pred.masks.shape) == (len(boxes), h, w)
