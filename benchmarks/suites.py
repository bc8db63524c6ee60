"""The benchmark's comparisons (issue 7), each a function ``suite(results, cfg, **options)``.

* :func:`vit_vs_timm` - ``RoPEViT`` (mixed / axial / none) vs timm's RoPE-ViT ports
  (``vit_*_patch16_rope{_mixed}_224``, ``dynamic_img_size=True``) with the same weights,
  outputs checked first; the RoPE overhead comes from the same interleaved runs.
* :func:`windowed_vit` - ViTDet-style windowed ``RoPEViT`` vs the same weights with all
  blocks global, and vs the manual-softmax attention baseline (mmdet's ViTDet way).
* :func:`window_scaling` - cost against pixels for window blocks (window-only, windowed
  with global blocks, all-global).
* :func:`swin_vs_mmdet` - ``RoPESwin`` vs mmdet's ``SwinTransformer`` (bias table), with a
  plain-Swin parity check through the same weights.
* :func:`compile_check` - ``torch.compile`` of a backbone (RoPEViT, windowed RoPEViT or
  RoPESwin): same outputs, compile time, speed-up.
"""
from __future__ import annotations

import math
import time
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .attention import manual_softmax_attention, swap_attention
from .measure import ParityError, check_parity, kernel_ops, time_group
from .report import Ratio, Results, Row, Size, growth_exponent, size_str
from .runner import BenchConfig, Contender, Parity, make_call, run_group
from .swap import swap_calls

ArchSpec = Union[str, dict]

#: RoPEViT presets -> (timm name stem, depth), for the timm counterparts.
TIMM_STEMS: dict[str, str] = {'small': 'vit_small_patch16', 'base': 'vit_base_patch16', 'large': 'vit_large_patch16'}
SHORT: dict[str, str] = {'small': 'S', 'base': 'B', 'large': 'L'}

#: timm's RoPE-ViT hyper-parameters, for a custom (tiny) arch dict in tests.
_TIMM_VIT_KW = ('embed_dim', 'depth', 'num_heads')


# ----------------------------------------------------------------------------- builders
def _short(arch: ArchSpec) -> str:
    """``'S'``, ``'B'``, ``'L'`` for presets; ``'d64L4h2'`` for a dict."""
    if isinstance(arch, str):
        return SHORT.get(arch, arch)
    return f'd{arch.get("embed_dims")}L{arch.get("depth")}h{arch.get("num_heads")}'


def _arch_name(arch: ArchSpec) -> str:
    return f'ViT-{_short(arch)}'


def _timm_kwargs(arch: ArchSpec) -> tuple[str, dict]:
    """timm model stem and the overrides for ``arch`` (a preset or a tiny dict)."""
    if isinstance(arch, str):
        if arch not in TIMM_STEMS:
            raise ValueError(f'arch={arch!r}: timm counterparts exist for {tuple(TIMM_STEMS)}')
        return TIMM_STEMS[arch], {}
    return 'vit_small_patch16', dict(embed_dim=arch['embed_dims'], depth=arch['depth'],
                                     num_heads=arch['num_heads'])


def build_timm_rope_vit(arch: ArchSpec, rope: str) -> nn.Module:
    """timm's port: ``..._rope_mixed_224`` (mixed), ``..._rope_224`` (axial), and for
    ``'none'`` the same axial model with ``use_rot_pos_emb=False`` (same architecture,
    no position information), all with ``dynamic_img_size=True`` and no head."""
    import timm
    stem, kw = _timm_kwargs(arch)
    name = f'{stem}_rope_mixed_224' if rope == 'mixed' else f'{stem}_rope_224'
    if rope == 'none':
        kw['use_rot_pos_emb'] = False
    elif rope not in ('mixed', 'axial'):
        raise ValueError(f'rope={rope!r}: choose mixed, axial or none')
    return timm.create_model(name, pretrained=False, dynamic_img_size=True, num_classes=0, **kw).eval()


def build_ropevit(arch: ArchSpec, rope: str, **kwargs) -> nn.Module:
    """``RoPEViT`` returning the final-normed last block as one NCHW map."""
    from ropevit.models.vit import RoPEViT
    if isinstance(arch, dict):
        depth = arch['depth']
    else:
        depth = {'small': 12, 'base': 12, 'large': 24}[arch]
    kwargs.setdefault('out_indices', (depth - 1,))
    return RoPEViT(arch=arch, rope=rope, drop_path_rate=0.0, **kwargs).eval()


def _blocks_count(model: nn.Module) -> nn.Module:
    """LayerScale starts at 1e-5: then the blocks barely touch the output and a parity check
    would not see a wrong attention. Draw every ``gamma`` from U(0.5, 1) instead."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(('gamma_1', 'gamma_2')):
                p.uniform_(0.5, 1.0)
    return model


def load_timm_weights(ours: nn.Module, timm_model: nn.Module) -> None:
    """Load a timm RoPE-ViT's weights into ``RoPEViT`` with ropevit's own converter."""
    from ropevit.checkpoint import vit as vit_ckpt
    sd = vit_ckpt.convert_vit_state_dict(timm_model.state_dict(), ours)
    missing, unexpected = ours.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith(('freqs_cos', 'freqs_sin'))]
    if missing or unexpected:
        raise ParityError(f'timm -> RoPEViT weights: missing {missing}, unexpected {unexpected}')


def timm_patch_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``forward_features`` patch tokens as NCHW (prefix tokens dropped)."""
    feats = model.forward_features(x)                        # [B, T + N, C]
    b, _, c = feats.shape
    h, w = -(-x.shape[-2] // 16), -(-x.shape[-1] // 16)
    return feats[:, model.num_prefix_tokens:].reshape(b, h, w, c).permute(0, 3, 1, 2)  # [B, C, h, w]


def timm_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What timm users run: ``forward_features`` (timed as is, no reshape)."""
    return model.forward_features(x)


def rope_table_calls(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Calls of ``rope_cos_sin`` in a first forward with empty caches and in a second one
    (a table cached across forwards shows as 0 there)."""
    for m in model.modules():                     # every per-grid cache (``_cache``, ``_rope_cache``, ...)
        for name, value in vars(m).items():
            if name.endswith('cache') and callable(getattr(value, 'clear', None)):
                value.clear()
    from ropevit.layers import rope as rope_math
    counts = []
    for _ in range(2):
        with torch.no_grad(), swap_calls(rope_math, 'rope_cos_sin') as calls:
            model(x)
        counts.append(calls[0])
    return counts[0], counts[1]


# ----------------------------------------------------------------------------- suites
def vit_vs_timm(results: Results, cfg: BenchConfig, *, archs: Sequence[ArchSpec] = ('small', 'base'),
                ropes: Sequence[str] = ('mixed', 'axial', 'none'), sizes: Sequence[Size] = ((224, 224),),
                atol: float = 1e-4, suite: str = 'RoPEViT vs timm') -> None:
    """RoPEViT vs timm for every arch x rope, all interleaved per size; ratios and RoPE overhead."""
    for arch in archs:
        name = _arch_name(arch)
        short = _short(arch)
        timed, refs, parity, ours_by_rope = [], [], [], {}
        for rope in ropes:
            torch.manual_seed(cfg.seed)
            ref = _blocks_count(build_timm_rope_vit(arch, rope)).to(cfg.device)
            ours = build_ropevit(arch, rope).to(cfg.device)
            load_timm_weights(ours, ref)
            ours_by_rope[rope] = ours
            cfg.log(f'[{suite}] {name} rope={rope}: RoPEViT loaded from timm '
                    f'{ref.default_cfg.get("architecture", "")}')
            timed += [Contender(f'RoPEViT-{short} {rope}', 'ropevit', ours),
                      Contender(f'timm {name} {rope}', 'timm', ref, timm_features)]
            refs.append(Contender(f'timm {name} {rope} (NCHW patch tokens)', 'timm', ref, timm_patch_features))
            parity.append(Parity(f'RoPEViT-{short} {rope}', refs[-1].label, atol))
        results.notes.append(f'[{suite}] kernel ops per forward (ATen ops that make a tensor, views excluded; '
                             f'each is a GPU kernel launch), at {size_str(sizes[0])}: '
                             + kernel_ops_per_forward(timed, sizes[0], cfg.device))
        for size in sizes:
            run_group(results, cfg, suite, timed, size, parity=parity, references=refs)
            x = torch.randn(cfg.batch, 3, *size, device=cfg.device)
            for rope, model in ours_by_rope.items():
                if rope != 'none':
                    first, second = rope_table_calls(model, x)
                    results.notes.append(
                        f'RoPEViT-{short} rope={rope} at {size_str(size)} (1 grid, {model.depth} blocks): '
                        f'rope_cos_sin called {first}x in a first forward (empty cache), {second}x in a second '
                        f'one (0 = cached across forwards)')
        for size in sizes:
            big = min(size) >= 512 or size[0] * size[1] >= 512 * 512
            for dtype in cfg.dtypes:
                for mode in cfg.modes:
                    fwd = mode == 'fwd'
                    for rope in ropes:
                        results.ratio(f'RoPEViT-{short} {rope} / timm time',
                                      results.get(suite, f'RoPEViT-{short} {rope}', size, mode, dtype),
                                      results.get(suite, f'timm {name} {rope}', size, mode, dtype),
                                      target='<= 1.0' if fwd else '',
                                      check=(lambda v: v <= 1.0) if fwd else None)
                    none = results.get(suite, f'RoPEViT-{short} none', size, mode, dtype)
                    for rope in ropes:
                        if rope != 'none':
                            results.ratio(f'RoPE overhead RoPEViT-{short} {rope} vs none (fraction)',
                                          results.get(suite, f'RoPEViT-{short} {rope}', size, mode, dtype),
                                          none, transform=lambda v: v - 1.0,
                                          target='<= 0.05' if big and fwd else '',
                                          check=(lambda v: v <= 0.05) if big and fwd else None)
        del timed, refs, ours_by_rope
        _free(cfg)


def _free(cfg: BenchConfig) -> None:
    import gc
    gc.collect()
    if cfg.device.type == 'cuda':
        torch.cuda.empty_cache()


def _vitdet_kwargs(arch: ArchSpec, window_size: int, global_blocks: Optional[Sequence[int]]) -> dict:
    depth = arch['depth'] if isinstance(arch, dict) else {'small': 12, 'base': 12, 'large': 24}[arch]
    if global_blocks is None:     # ViTDet: the last block of each quarter
        global_blocks = tuple(depth // 4 * (i + 1) - 1 for i in range(4))
    return dict(window_size=window_size, global_attn_indexes=tuple(global_blocks), with_cls_token=False)


def _tag(arch: ArchSpec, window_size: int, global_blocks: Optional[Sequence[int]]) -> str:
    n = len(_vitdet_kwargs(arch, window_size, global_blocks)['global_attn_indexes'])
    return f'ws{window_size}+{n} global'


def _windowed_family(cfg: BenchConfig, arch: ArchSpec, rope: str, window_size: int,
                     global_blocks: Optional[Sequence[int]], *, window_only: bool = False,
                     with_none: bool = False) -> dict[str, nn.Module]:
    """Windowed, all-global (and window-only / rope=none) RoPEViTs sharing one set of weights."""
    torch.manual_seed(cfg.seed)
    kw = _vitdet_kwargs(arch, window_size, global_blocks)
    windowed = _blocks_count(build_ropevit(arch, rope, **kw)).to(cfg.device)
    sd = windowed.state_dict()
    models = {'windowed': windowed}
    variants = {'all-global': dict(kw, window_size=0, global_attn_indexes=())}
    if window_only:
        variants['window-only'] = dict(kw, global_attn_indexes=())
    for key, vkw in variants.items():
        m = build_ropevit(arch, rope, **vkw).to(cfg.device)
        m.load_state_dict(sd)
        models[key] = m
    if with_none:
        torch.manual_seed(cfg.seed)
        m = build_ropevit(arch, 'none', **kw).to(cfg.device)
        m.load_state_dict({k: v for k, v in sd.items() if k in m.state_dict()})
        models['windowed rope=none'] = m
    return models


def _manual(c_model: nn.Module, label: str) -> Contender:
    return Contender(label, 'manual-softmax', c_model, context=lambda: swap_attention(manual_softmax_attention))


def windowed_vit(results: Results, cfg: BenchConfig, *, arch: ArchSpec = 'base', rope: str = 'mixed',
                 window_size: int = 14, global_blocks: Optional[Sequence[int]] = None,
                 sizes: Sequence[Size] = ((1024, 1024),), global_manual: bool = True, atol: float = 1e-4,
                 suite: str = 'windowed ViT') -> None:
    """Windowed RoPEViT vs all-global vs the manual-softmax baseline of the same weights."""
    name = _arch_name(arch)
    models = _windowed_family(cfg, arch, rope, window_size, global_blocks, with_none=rope != 'none')
    tag = _tag(arch, window_size, global_blocks)
    win = f'RoPEViT-{_short(arch)} {rope} {tag}'
    glob = f'RoPEViT-{_short(arch)} {rope} all-global'
    contenders = [Contender(win, 'ropevit', models['windowed']),
                  _manual(models['windowed'], f'manual-softmax {name} {rope} {tag}'),
                  Contender(glob, 'ropevit', models['all-global'])]
    if global_manual:
        contenders.append(_manual(models['all-global'], f'manual-softmax {name} {rope} all-global'))
    if 'windowed rope=none' in models:
        contenders.append(Contender(f'RoPEViT-{_short(arch)} none {tag}', 'ropevit',
                                    models['windowed rope=none']))
    for size in sizes:
        x = torch.randn(cfg.batch, 3, *size, device=cfg.device)
        with torch.no_grad(), swap_attention(manual_softmax_attention) as calls:
            models['windowed'](x)
        if calls[0] == 0:
            raise ParityError('manual-softmax swap did not reach RoPEViT attention')
        if rope != 'none':
            first, second = rope_table_calls(models['windowed'], x)
            results.notes.append(
                f'{win} at {size_str(size)} (2 grids: window and global, {models["windowed"].depth} blocks): '
                f'rope_cos_sin called {first}x in a first forward (empty cache), {second}x in a second one')
        parity = [Parity(contenders[1].label, win, atol)]
        if global_manual:
            parity.append(Parity(contenders[3].label, glob, atol))
        rows = run_group(results, cfg, suite, contenders, size, parity=parity)
        for dtype in cfg.dtypes:
            for mode in cfg.modes:
                w = rows[(win, mode, dtype)]
                m = rows[(contenders[1].label, mode, dtype)]
                g = rows[(glob, mode, dtype)]
                results.ratio(f'manual-softmax / RoPEViT windowed time (speed-up)', m, w,
                              target='>= 1.5' if mode == 'fwd' else '',
                              check=(lambda v: v >= 1.5) if mode == 'fwd' else None)
                if global_manual:
                    results.ratio(f'manual-softmax all-global / RoPEViT all-global time (speed-up)',
                                  rows[(contenders[3].label, mode, dtype)], g)
                results.ratio('RoPEViT all-global / windowed time', g, w)
                results.ratio('RoPEViT windowed / all-global peak memory', w, g,
                              quantity=lambda r: r.peak_mib, target='<= 0.5', check=lambda v: v <= 0.5)
                results.ratio('manual-softmax windowed / RoPEViT windowed peak memory', m, w,
                              quantity=lambda r: r.peak_mib)
                none_row = rows.get((f'RoPEViT-{_short(arch)} none {tag}', mode, dtype))
                if none_row is not None:
                    results.ratio(f'RoPE overhead RoPEViT-{_short(arch)} windowed {rope} vs none (fraction)',
                                  w, none_row, transform=lambda v: v - 1.0,
                                  target='<= 0.05' if mode == 'fwd' else '',
                                  check=(lambda v: v <= 0.05) if mode == 'fwd' else None)
    del models, contenders
    _free(cfg)


def window_scaling(results: Results, cfg: BenchConfig, *, arch: ArchSpec = 'base', rope: str = 'mixed',
                   window_size: int = 14, global_blocks: Optional[Sequence[int]] = None,
                   sizes: Sequence[int] = (512, 640, 768, 896, 1024), all_global: bool = True,
                   suite: str = 'cost vs pixels') -> None:
    """Forward cost against pixels: window-only, windowed (+global blocks), all-global."""
    name = _arch_name(arch)
    models = _windowed_family(cfg, arch, rope, window_size, global_blocks, window_only=True)
    contenders = [Contender(f'RoPEViT-{_short(arch)} {rope} ws{window_size} window-only', 'ropevit',
                            models['window-only']),
                  Contender(f'RoPEViT-{_short(arch)} {rope} {_tag(arch, window_size, global_blocks)}', 'ropevit',
                            models['windowed'])]
    if all_global:
        contenders.append(Contender(f'RoPEViT-{_short(arch)} {rope} all-global', 'ropevit', models['all-global']))
    rows: dict[int, dict] = {}
    for s in sizes:
        rows[s] = run_group(results, cfg, suite, contenders, (s, s), modes=('fwd',))
    lo, hi = min(sizes), max(sizes)
    if lo != hi:
        for dtype in cfg.dtypes:
            for c in contenders:
                a, b = rows[lo][(c.label, 'fwd', dtype)], rows[hi][(c.label, 'fwd', dtype)]
                exp = growth_exponent(a, b)
                window_only = 'window-only' in c.label
                exp_min = math.log(b.time.min / a.time.min) / math.log(b.pixels / a.pixels)
                results.ratios.append(_exp_ratio(f'time growth exponent {lo}->{hi} (1 = linear in pixels): '
                                                 f'{c.label}', b, exp, window_only, exp_min))
    del models, contenders
    _free(cfg)


def _exp_ratio(name: str, row: Row, exp: float, checked: bool, exp_min: Optional[float] = None) -> Ratio:
    return Ratio(name, row.size, row.mode, row.dtype, exp, '<= 1.15 (about linear)' if checked else '',
                 (exp <= 1.15) if checked else None, exp_min)


SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))

#: Backbones :func:`compile_check` can compile.
COMPILE_MODELS: tuple[str, ...] = ('vit', 'vitdet', 'swin')


def build_mmdet_swin(arch: dict) -> nn.Module:
    from mmdet.models.backbones.swin import SwinTransformer
    m = SwinTransformer(embed_dims=arch['embed_dims'], depths=list(arch['depths']), num_heads=list(arch['num_heads']),
                        drop_path_rate=0.0)
    m.init_weights()
    m.eval()              # mmdet's train() returns None
    return m


def swin_vs_mmdet(results: Results, cfg: BenchConfig, *, arch: Optional[dict] = None,
                  sizes: Sequence[Size] = ((224, 224), (800, 1333)), ropes: Sequence[str] = ('mixed', 'axial'),
                  use_mmdet: bool = True, atol: float = 1e-4,
                  suite: str = 'RoPESwin vs mmdet Swin') -> None:
    """mmdet Swin-T vs ropevit's plain Swin (same weights, parity) and RoPESwin (RoPE, no table).

    Also times the plain Swin with the manual-softmax swap ("mmdet's math": the same
    ``q @ k^T * scale + bias + mask``, softmax, ``@ v`` that mmdet's ``WindowMSA``
    computes). Without mmdet (``use_mmdet=False``) that contender is the reference.
    """
    from ropevit.checkpoint.swin import convert_swin_state_dict
    from ropevit.models.swin import RoPESwin
    arch = dict(SWIN_T if arch is None else arch)
    tag = 'Swin-T' if arch == SWIN_T else f'Swin(d{arch["embed_dims"]})'
    torch.manual_seed(cfg.seed)
    plain = RoPESwin(arch=arch, rope='none', use_rpb=True, mask_padding=False, drop_path_rate=0.0)
    contenders, parity = [], []
    if use_mmdet:
        ref = build_mmdet_swin(arch)
        with torch.no_grad():     # non-trivial bias tables
            for n, p in ref.named_parameters():
                if 'relative_position_bias_table' in n:
                    p.normal_(0, 0.5)
        plain.load_state_dict(convert_swin_state_dict(ref.state_dict(), plain))
        contenders.append(Contender(f'mmdet {tag} (bias table)', 'mmdet', ref.to(cfg.device)))
    else:
        with torch.no_grad():
            for n, p in plain.named_parameters():
                if 'relative_position_bias_table' in n:
                    p.normal_(0, 0.5)
    plain = plain.eval().to(cfg.device)
    plain_label = f'RoPESwin {tag} none + bias table'
    manual_label = f'{tag} none + bias table, manual softmax (mmdet math)'
    contenders += [Contender(plain_label, 'ropevit', plain), _manual(plain, manual_label)]
    reference = contenders[0].label
    if use_mmdet:
        parity += [Parity(plain_label, reference, atol), Parity(manual_label, reference, atol)]
    else:
        parity.append(Parity(plain_label, manual_label, atol))
        contenders = [contenders[1], contenders[0]]
        reference = manual_label
        results.notes.append(f'no mmdet here: the reference is ropevit\'s plain Swin with the manual-softmax '
                             f'attention ("{manual_label}"), the computation of mmdet\'s WindowMSA')
    sd = {k: v for k, v in plain.state_dict().items() if 'relative_position' not in k}
    for rope in ropes:
        m = RoPESwin(arch=arch, rope=rope, drop_path_rate=0.0)
        missing, unexpected = m.load_state_dict(sd, strict=False)
        if unexpected or any('rope' not in k for k in missing):
            raise ParityError(f'Swin weights do not fit RoPESwin rope={rope}: {missing} {unexpected}')
        contenders.append(Contender(f'RoPESwin {tag} {rope} (no table)', 'ropevit', m.eval().to(cfg.device)))
    ref_name = 'mmdet' if use_mmdet else 'mmdet-math'
    results.notes.append(f'[{suite}] kernel ops per forward (ATen ops that make a tensor, views excluded; '
                         f'each is a GPU kernel launch, what batch-1 GPU time follows), at '
                         f'{size_str(sizes[0])}: ' + kernel_ops_per_forward(contenders, sizes[0], cfg.device))
    for size in sizes:
        rows = run_group(results, cfg, suite, contenders, size, parity=parity)
        big = size[0] * size[1] >= 800 * 1333
        for dtype in cfg.dtypes:
            for mode in cfg.modes:
                for c in contenders:
                    if c.label == reference:
                        continue
                    check = big and mode == 'fwd' and '(no table)' in c.label
                    results.ratio(f'{c.label} / {ref_name} time', rows[(c.label, mode, dtype)],
                                  rows[(reference, mode, dtype)],
                                  target='<= 1.0' if check else '', check=(lambda v: v <= 1.0) if check else None)
                for c in contenders:
                    if '(no table)' in c.label:
                        results.ratio(f'{c.label} / {ref_name} peak memory', rows[(c.label, mode, dtype)],
                                      rows[(reference, mode, dtype)], quantity=lambda r: r.peak_mib)
    del contenders
    _free(cfg)


def kernel_ops_per_forward(contenders: Sequence[Contender], size: Size, device: torch.device) -> str:
    """``'label N, ...'``: kernel ops of one warm fp32 forward of each contender."""
    x = torch.randn(1, 3, *size, device=device)
    counts = []
    for c in contenders:
        call = make_call(c, x, mode='fwd', dtype='fp32')
        call()                                      # warm: per-grid caches filled
        counts.append(f'{c.label} {kernel_ops(call)}')
    return ', '.join(counts)


def compile_check(results: Results, cfg: BenchConfig, *, model: str = 'vit', arch: Optional[ArchSpec] = None,
                  rope: str = 'mixed', size: Size = (224, 224), window_size: int = 14,
                  global_blocks: Optional[Sequence[int]] = None, atol: float = 1e-4,
                  suite: str = 'torch.compile') -> None:
    """``torch.compile`` of a backbone: outputs equal eager's (fwd), compile time, speed-up.

    ``model``: ``'vit'`` (RoPEViT, ``arch`` a ViT preset or dict), ``'vitdet'`` (windowed
    RoPEViT) or ``'swin'`` (RoPESwin, ``arch`` a Swin arch dict, default Swin-T).
    """
    if model not in COMPILE_MODELS:
        raise ValueError(f'compile_check: model={model!r}; allowed: {COMPILE_MODELS}')
    torch.manual_seed(cfg.seed)
    if model == 'swin':
        from ropevit.models.swin import RoPESwin
        arch = dict(SWIN_T if arch is None else arch)
        eager = RoPESwin(arch=arch, rope=rope, drop_path_rate=0.0, out_indices=(0, 1, 2, 3)).eval()
        label = f'RoPESwin-{"T" if arch == SWIN_T else _short(arch)} {rope}'
    else:
        arch = 'small' if arch is None else arch
        kw = _vitdet_kwargs(arch, window_size, global_blocks) if model == 'vitdet' else {}
        eager = _blocks_count(build_ropevit(arch, rope, **kw))
        label = f'RoPEViT-{_short(arch)} {rope}' + (f' {_tag(arch, window_size, global_blocks)}'
                                                    if model == 'vitdet' else '')
    eager = eager.to(cfg.device)
    compiled = torch.compile(eager)
    x = torch.randn(cfg.batch, 3, *size, generator=torch.Generator().manual_seed(cfg.seed)).to(cfg.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        got = compiled(x)
    compile_s = time.perf_counter() - t0
    with torch.no_grad():
        ref = eager(x)
    diff = check_parity(ref, got, atol=atol, what=f'[{suite}] compiled vs eager {label}')
    # at least 2 warm-up calls: a guard may still trigger one recompile after the first call
    stats = time_group({'eager': lambda: _fwd(eager, x), 'compiled': lambda: _fwd(compiled, x)},
                       warmup=max(cfg.warmup, 2), reps=cfg.reps, min_run_time=cfg.min_run_time)
    e = results.add(Row(suite, f'{label} eager', 'ropevit', size, 'fwd', 'fp32', stats['eager']))
    c = results.add(Row(suite, f'{label} torch.compile', 'compiled', size, 'fwd', 'fp32', stats['compiled'],
                        parity=f'max abs diff {diff:.1e} vs eager', extra={'compile_s': compile_s}))
    results.ratio(f'eager / torch.compile time (speed-up), {label}', e, c)
    results.notes.append(f'torch.compile of {label} at {size_str(size)}: first call (compile) {compile_s:.1f} s, '
                         f'max abs diff vs eager {diff:.1e}')
    cfg.log(f'  compile {label}: {compile_s:.1f} s to compile, eager {stats["eager"].median:.1f} ms, '
            f'compiled {stats["compiled"].median:.1f} ms')


def _fwd(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


# ----------------------------------------------------------------------------- deploy
def _ort_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort
    have = ort.get_available_providers()
    if device.type == 'cuda' and 'CUDAExecutionProvider' in have:
        return ['CUDAExecutionProvider', 'CPUExecutionProvider']
    return ['CPUExecutionProvider']


def deploy_check(results: Results, cfg: BenchConfig, *, vit_arch: ArchSpec = 'base',
                 vit_size: Size = (1024, 1024), window_size: int = 14,
                 global_blocks: Optional[Sequence[int]] = None, swin_arch: Optional[dict] = None,
                 swin_size: Size = (800, 1333), exporter: str = 'dynamo', atol: float = 1e-3,
                 suite: str = 'deploy') -> None:
    """onnxruntime against eager PyTorch for a windowed RoPEViT (ViTDet) and RoPESwin.

    Each backbone is exported with dynamic batch / H / W (``ropevit.deploy.export_onnx``) at a
    smaller size than it is timed at, so the timed graph runs at a size it never saw; the
    outputs are checked against eager first. onnxruntime uses the CPU provider, or CUDA's on a
    GPU when installed (the exported file is the same).
    """
    import tempfile

    from ropevit.deploy import export_onnx, onnx_session, run_onnx
    from ropevit.models.swin import RoPESwin

    torch.manual_seed(cfg.seed)
    swin_arch = dict(SWIN_T if swin_arch is None else swin_arch)
    vit = build_ropevit(vit_arch, 'mixed', **_vitdet_kwargs(vit_arch, window_size, global_blocks))
    swin = RoPESwin(arch=swin_arch, rope='mixed', drop_path_rate=0.0, out_indices=(0, 1, 2, 3)).eval()
    swin_label = f'RoPESwin-{"T" if swin_arch == SWIN_T else _short(swin_arch)} mixed'
    plan = [(f'RoPEViT-{_short(vit_arch)} mixed {_tag(vit_arch, window_size, global_blocks)}', vit, vit_size),
            (swin_label, swin, swin_size)]
    providers = _ort_providers(cfg.device)
    with tempfile.TemporaryDirectory(prefix='ropevit_deploy_') as tmp:
        for label, model, size in plan:
            model = model.cpu().eval()
            trace = (max(32, size[0] // 2 + 7), max(32, size[1] // 2 + 3))      # not the timed size
            path = f'{tmp}/{len(results.rows)}.onnx'
            t0 = time.perf_counter()
            export_onnx(model, torch.randn(1, 3, *trace), path, exporter=exporter, dynamic=True)
            export_s = time.perf_counter() - t0
            session = onnx_session(path, providers)
            model = model.to(cfg.device)
            x = torch.randn(cfg.batch, 3, *size, generator=torch.Generator().manual_seed(cfg.seed)).to(cfg.device)
            with torch.no_grad():
                ref = model(x)
            got = run_onnx(session, x)
            diff = check_parity([r.cpu() for r in ref], got, atol=atol,
                                what=f'[{suite}] onnxruntime vs eager {label}')
            stats = time_group({'eager': lambda: _fwd(model, x), 'ort': lambda: run_onnx(session, x)},
                               warmup=max(cfg.warmup, 1), reps=cfg.reps, min_run_time=cfg.min_run_time)
            e = results.add(Row(suite, f'{label} eager', 'ropevit', size, 'fwd', 'fp32', stats['eager']))
            o = results.add(Row(suite, f'{label} onnxruntime', 'onnxruntime', size, 'fwd', 'fp32', stats['ort'],
                                parity=f'max abs diff {diff:.1e} vs eager',
                                extra={'export_s': export_s, 'traced_at': size_str(trace),
                                       'providers': ','.join(providers)}))
            results.ratio(f'eager / onnxruntime time (speed-up), {label}', e, o)
            results.notes.append(f'deploy {label}: ONNX ({exporter}, dynamic H/W) traced at {size_str(trace)}, '
                                 f'run at {size_str(size)} on {providers[0]}; export {export_s:.1f} s; max abs diff '
                                 f'vs eager {diff:.1e}')
            cfg.log(f'  deploy {label}: export {export_s:.1f} s, eager {stats["eager"].median:.1f} ms, '
                    f'onnxruntime {stats["ort"].median:.1f} ms, diff {diff:.1e}')
            _free(cfg)
