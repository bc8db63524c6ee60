"""The optimizer every config builds gives each parameter the lr and weight decay the config means.

Every config under configs/ (zoo and demo) and projects/*/configs/ (study, plug-in) is found by
globbing and must be listed in ``INTENT`` below, written from what the config's comments and the
README say it trains. Each one is built as ``tools/train.py`` does (``build_optim_wrapper(model,
cfg.optim_wrapper)``) on its own model, shrunk in width and depth (parameter names kept), and
measured through the optimizer itself: in float64, with all backbone parameters 0 and gradients
1, one AdamW step moves each element by ``-lr / (1 + eps)`` (the decay term is 0 at 0); with
parameters 1 and gradients 0 it moves them by ``-lr * weight_decay`` (to ~1e-7 relative, as
``1 - lr * wd`` rounds). The expected values come from the optimizer numbers the config states and
the rules below, with the layer id written out here from the parameter name (not from
``get_layer_id``).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch
from mmengine.config import Config
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
POSITION = ('relative_position_bias_table', 'absolute_pos_embed', 'pos_embed', 'cls_token', 'reg_token')
ROPE = ('rope_freqs', 'rope.freqs')


@dataclass(frozen=True)
class Intent:
    """What a config says about its optimizer."""
    backbone_lr_mult: float = 1.0        # backbone lr = base lr x this (no layer decay)
    layer_decay: Optional[float] = None  # ViT recipe: lr x rate ** (num_layers - 1 - layer id)
    decay_norms: bool = False            # weight decay on norm weights and biases (Swin recipe: no)
    decay_position: bool = False         # weight decay on position parameters (never)
    decay_biases: bool = True            # mmdet/mmseg Swin recipes decay biases; ViT/layer decay: no
    head_no_decay: tuple[str, ...] = ()  # head parameters the config names as not decayed


SWIN_DET = Intent()                                             # mmdet's Swin recipe + RoPE frequencies
LAYER_DECAY = dict(decay_biases=False)
INTENT: dict[str, Intent] = {
    'configs/mask_rcnn_rope_swin_t.py': SWIN_DET,
    'configs/mask_rcnn_rope_swin_t_3x.py': SWIN_DET,
    'configs/mask_rcnn_rope_swin_t_axial.py': SWIN_DET,
    'configs/cascade_mask_rcnn_rope_swin_t.py': SWIN_DET,
    'configs/demo/mask_rcnn_rope_swin_demo.py': SWIN_DET,
    'configs/dino_rope_swin_t.py': Intent(backbone_lr_mult=0.1),  # DINO: backbone at 0.1x
    'configs/mask_rcnn_rope_vit_b.py': Intent(layer_decay=0.7, **LAYER_DECAY),
    'configs/dino_rope_vit_b.py': Intent(layer_decay=0.7, **LAYER_DECAY),
    'configs/mask_rcnn_dinov3_vit_b.py': Intent(layer_decay=0.7, **LAYER_DECAY),    # mask_rcnn_rope_vit_b's recipe
    'configs/mask_rcnn_eva02_vit_b.py': Intent(layer_decay=0.7, **LAYER_DECAY),
    'configs/upernet_rope_swin_t_ade20k.py': SWIN_DET,
    'configs/upernet_rope_swin_t_axial_ade20k.py': SWIN_DET,
    'configs/upernet_rope_swin_s_ade20k.py': SWIN_DET,
    'configs/upernet_rope_swin_b_ade20k.py': SWIN_DET,
    'configs/demo/upernet_rope_swin_demo_seg.py': SWIN_DET,
    'configs/mask2former_rope_swin_t_ade20k.py': Intent(
        backbone_lr_mult=0.1, head_no_decay=('query_embed', 'query_feat', 'level_embed')),
    'configs/upernet_rope_vit_b_ade20k.py': Intent(layer_decay=0.65, **LAYER_DECAY),
    'configs/upernet_rope_vit_b_axial_ade20k.py': Intent(layer_decay=0.65, **LAYER_DECAY),
    'configs/upernet_rope_vit_s_ade20k.py': Intent(layer_decay=0.65, **LAYER_DECAY),
    'configs/upernet_rope_vit_s_axial_ade20k.py': Intent(layer_decay=0.65, **LAYER_DECAY),
    'configs/upernet_dinov3_vit_b_ade20k.py': Intent(layer_decay=0.65, **LAYER_DECAY),  # upernet_rope_vit_b's
    'configs/upernet_eva02_vit_b_ade20k.py': Intent(layer_decay=0.65, **LAYER_DECAY),
    'projects/plugin_example/configs/mask-rcnn_rope-swin-t-p4-w7_fpn_1x_coco.py': SWIN_DET,
    'projects/plugin_example/configs/upernet_rope-swin-t_8xb2-160k_ade20k-512x512.py': SWIN_DET,
    # mmseg's ViT UperNet recipe (custom_keys: no decay on norms, pos_embed, cls_token), DINOv3 backbone
    'projects/plugin_example/configs/upernet_dinov3-vit-b_8xb2-160k_ade20k-512x512.py': Intent(),
    # The study: AdamW on everything but the position encodings (which it compares).
    **{f'projects/resolution_extrapolation/configs/quadrants_{v}.py': Intent(decay_norms=True)
       for v in ('nope', 'ape', 'rope-axial', 'rope-mixed', 'rope-mixed-ape', 'rope-axial-normalized',
                 'rope-mixed-normalized')},
}


def _configs() -> list[str]:
    found = [*ROOT.glob('configs/**/*.py'), *ROOT.glob('projects/*/configs/**/*.py')]
    return sorted(str(p.relative_to(ROOT)) for p in found if '_base_' not in p.parts)


CONFIGS = _configs()


def test_every_config_has_a_stated_intent():
    """A new config fails here until its optimizer intent is written down in INTENT."""
    assert set(CONFIGS) == set(INTENT), (sorted(set(CONFIGS) - set(INTENT)), sorted(set(INTENT) - set(CONFIGS)))


# ------------------------------------------------------------------------------------------ model
def _shrink(cfg: Config) -> None:
    """Narrow, shallow backbone (names kept: every stage, every ViT block) and matching heads."""
    bb = cfg.model.backbone
    bb.init_cfg = None
    bb.pop('pretrained', None)
    if bb.type == 'RoPESwin':
        bb.update(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
        bb.pop('arch', None)
        chans = [32 * 2 ** i for i in bb.get('out_indices', (0, 1, 2, 3))]
        if cfg.model.get('neck'):
            cfg.model.neck.in_channels = chans
        else:
            cfg.model.decode_head.in_channels = chans
        aux = cfg.model.get('auxiliary_head')
        if aux:
            aux.in_channels = 32 * 2 ** aux.in_index
    else:
        assert bb.type == 'RoPEViT', bb.type
        if isinstance(bb.arch, str):
            bb.arch = dict(embed_dims=32, num_heads=2, depth=12)
        c = bb.arch['embed_dims']
        neck = cfg.model.get('neck')
        if neck and neck.type == 'SimpleFPN':
            neck.in_channels = [c // 4, c // 2, c, c] if 'backbone_channel' in neck else c
            if 'backbone_channel' in neck:
                neck.backbone_channel = c
        elif neck:
            neck.update(in_channels=[c] * 4, out_channels=c)
            cfg.model.decode_head.in_channels = [c] * 4
            cfg.model.auxiliary_head.in_channels = c
    _shrink_heads(cfg)


def _shrink_heads(cfg: Config) -> None:
    """Narrow the widest head layers (only the backbone's names matter here)."""
    for key in ('decode_head', 'auxiliary_head'):
        head = cfg.model.get(key)
        if head and head.type in ('UPerHead', 'FCNHead'):
            head.channels = 16
    roi = cfg.model.get('roi_head')
    if roi:
        for head in roi.bbox_head if isinstance(roi.bbox_head, list) else [roi.bbox_head]:
            head.fc_out_channels = 16


def _build(path: str):
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(ROOT / path))
    _shrink(cfg)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model).double()
    return cfg, model


# ----------------------------------------------------------------------------------- the oracle
def _vit_layer_ids(name: str, depth: int) -> list[int]:
    """BEiT convention: stem and position parameters 0, block i -> i + 1, final norm depth + 1;
    the shared RoPE frequencies [2, depth, nh, P]: slice i -> block i's id."""
    if name == 'rope.freqs':
        return list(range(1, depth + 1))
    m = re.match(r'blocks\.(\d+)\.', name)
    if m:
        return [int(m.group(1)) + 1]
    if name.startswith(('patch_embed.', 'cls_token', 'reg_token', 'pos_embed')):
        return [0]
    assert name.startswith('norm.'), name
    return [depth + 1]


def _is_norm(model: nn.Module, full_name: str) -> bool:
    module = model.get_submodule(full_name.rpartition('.')[0])
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))


def _expected_decay(intent: Intent, model: nn.Module, name: str, param: torch.Tensor, wd: float) -> float:
    short = name[len('backbone.'):] if name.startswith('backbone.') else name
    if any(short == k or short.endswith('.' + k) for k in ROPE):
        return 0.0                                           # RoPE frequencies: never
    if any(short == k or short.endswith('.' + k) for k in POSITION) and not intent.decay_position:
        return 0.0
    if intent.layer_decay is not None:
        return 0.0 if param.ndim <= 1 else wd                # norms and biases are 1-D
    if _is_norm(model, name) and not intent.decay_norms:
        return 0.0
    if name.endswith('.bias') and not intent.decay_biases:
        return 0.0
    return wd


def _measure(model: nn.Module, optim_cfg, value: float, grad: float):
    """``(wrapper, element-wise step of every backbone parameter from value with gradient grad)``."""
    from mmengine.optim import build_optim_wrapper
    wrapper = build_optim_wrapper(model, copy.deepcopy(optim_cfg))
    backbone = dict(model.backbone.named_parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.grad = None
        for p in backbone.values():
            p.fill_(value)
            p.grad = torch.full_like(p, grad)
    wrapper.optimizer.step()
    return wrapper, {n: p.detach() - value for n, p in backbone.items()}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('path', CONFIGS, ids=[Path(p).stem for p in CONFIGS])
def test_config_optimizer_gives_each_parameter_its_intended_lr_and_decay(path):
    import ropevit.mm  # noqa: F401
    intent = INTENT[path]
    cfg, model = _build(path)
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW', opt.type                    # the measurement below is AdamW's step
    base_lr, base_wd, eps = opt.lr, opt.get('weight_decay', 0.01), opt.get('eps', 1e-8)
    if intent.layer_decay is not None:
        assert cfg.optim_wrapper.paramwise_cfg.decay_rate == intent.layer_decay

    wrapper, lr_step = _measure(model, cfg.optim_wrapper, value=0.0, grad=1.0)   # -lr / (1 + eps)
    _, decay_step = _measure(model, cfg.optim_wrapper, value=1.0, grad=0.0)     # -lr * weight_decay
    bb = model.backbone
    depth = getattr(bb, 'depth', None)
    for name, param in bb.named_parameters():
        full = 'backbone.' + name
        if intent.layer_decay is not None:
            ids = _vit_layer_ids(name, depth)
            lrs = [base_lr * intent.layer_decay ** (depth + 1 - i) for i in ids]
            expected_lr = torch.tensor(lrs, dtype=torch.float64)
            if name == 'rope.freqs':                                    # [2, depth, nh, P]
                expected_lr = expected_lr.view(1, -1, 1, 1).expand_as(param)
            else:
                expected_lr = expected_lr.expand_as(param)
        else:
            expected_lr = torch.full_like(param, base_lr * intent.backbone_lr_mult)
        lr = -lr_step[name] * (1 + eps)
        torch.testing.assert_close(lr, expected_lr, rtol=1e-9, atol=0, msg=lambda m: f'{path}: lr of {full}: {m}')
        wd = _expected_decay(intent, model, full, param, base_wd)
        torch.testing.assert_close(-decay_step[name], expected_lr * wd, rtol=1e-5, atol=1e-20,
                                   msg=lambda m: f'{path}: weight decay of {full} (expected {wd}): {m}')

    # Outside the backbone: the base lr, and no decay where the config names it; every parameter
    # in exactly one group.
    group_of = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    assert sum(len(g['params']) for g in wrapper.optimizer.param_groups) == len(list(model.parameters()))
    for name, param in model.named_parameters():
        if name.startswith('backbone.'):
            continue
        group = group_of[id(param)]
        assert group['lr'] == pytest.approx(base_lr, rel=1e-12), (path, name)
        if any(k in name for k in intent.head_no_decay):
            assert group['weight_decay'] == 0.0, (path, name)


# ------------------------------------------------------------------------- the constructor's rule
class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.attn.rope_freqs = nn.Parameter(torch.zeros(2, 1, 2))
        self.norm1 = nn.LayerNorm(4)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.head = nn.Linear(4, 2)
        self.head_gn = nn.GroupNorm(1, 2)


def _groups(constructor: str, paramwise_cfg: dict) -> dict[str, tuple[float, float]]:
    from mmengine.optim import build_optim_wrapper
    import ropevit.mm  # noqa: F401
    model = _Model()
    cfg = dict(optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.5), paramwise_cfg=paramwise_cfg)
    if constructor:
        cfg['constructor'] = constructor
    wrapper = build_optim_wrapper(model, cfg)
    group_of = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    return {n: (group_of[id(p)]['lr'], group_of[id(p)]['weight_decay']) for n, p in model.named_parameters()}


DINO_KEYS = dict(custom_keys={'backbone': dict(lr_mult=0.1), 'rope_freqs': dict(decay_mult=0.),
                              'norm': dict(decay_mult=0.)})


def test_mmengine_default_applies_only_the_longest_key():
    """The measured bug (configs/dino_rope_swin_t.py before the fix): rope_freqs loses the
    backbone's lr_mult, and 'backbone' wins over 'norm'."""
    got = _groups('', DINO_KEYS)
    assert got['backbone.attn.rope_freqs'] == (1.0, 0.0)
    assert got['backbone.norm1.weight'] == (pytest.approx(0.1), 0.5)


def test_rope_constructor_composes_keys_and_type_rules():
    got = _groups('RoPEOptimWrapperConstructor', DINO_KEYS)
    assert got == {
        'backbone.attn.weight': (pytest.approx(0.1), 0.5),
        'backbone.attn.bias': (pytest.approx(0.1), 0.5),
        'backbone.attn.rope_freqs': (pytest.approx(0.1), 0.0),
        'backbone.norm1.weight': (pytest.approx(0.1), 0.0),
        'backbone.norm1.bias': (pytest.approx(0.1), 0.0),
        'head.weight': (1.0, 0.5), 'head.bias': (1.0, 0.5),
        'head_gn.weight': (1.0, 0.5), 'head_gn.bias': (1.0, 0.5)}   # 'norm' is not a substring of them
    # mmseg's Mask2Former style: 'backbone' sets decay_mult=1 and norm_decay_mult=0 still applies.
    got = _groups('RoPEOptimWrapperConstructor', dict(
        custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0)}, norm_decay_mult=0.0, bias_decay_mult=0.5))
    assert got['backbone.norm1.weight'] == (pytest.approx(0.1), 0.0)
    assert got['head_gn.bias'] == (1.0, 0.0)
    assert got['backbone.attn.bias'] == (pytest.approx(0.1), 0.25)
    assert got['backbone.attn.rope_freqs'] == (pytest.approx(0.1), 0.0)   # built in: never decayed
    # A plug-in config that inherits mmdet's Swin keys (no rope_freqs) still exempts the frequencies.
    got = _groups('RoPEOptimWrapperConstructor', dict(custom_keys={'norm': dict(decay_mult=0.)}))
    assert got['backbone.attn.rope_freqs'] == (1.0, 0.0)
    assert got['backbone.attn.weight'] == (1.0, 0.5)


def test_rope_constructor_rejects_unknown_keys_and_logs_groups():
    from mmengine.logging import MMLogger
    with pytest.raises(ValueError, match=r"unknown paramwise_cfg keys \['norm_decay_mul'\]"):
        _groups('RoPEOptimWrapperConstructor', dict(norm_decay_mul=0.0))
    logger = MMLogger.get_instance('test_optim_groups_log', log_level='INFO')
    records = []
    handler = __import__('logging').Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        _groups('RoPEOptimWrapperConstructor', DINO_KEYS)
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(r.getMessage() for r in records)
    assert 'RoPEOptimWrapperConstructor: 3 param groups' in text
    assert 'lr=0.1 weight_decay=0 tensors=3' in text and 'backbone.attn.rope_freqs' in text
