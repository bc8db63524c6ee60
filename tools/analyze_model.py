"""Parameter count, FLOPs and RoPE settings of a config's model at a given input size.

    python tools/analyze_model.py CONFIG [--shape H [W]] [--backbone-only] [--show-table]
                                  [--json OUT.json] [--cfg-options KEY=VALUE ...]

Counts with mmengine's analysis utilities (``mmengine.analysis.FlopAnalyzer`` and
``parameter_count``, the code behind ``get_model_complexity_info``), on one ``[1, 3, H, W]``
input, for the whole model (``mode='tensor'``, as mmdet's ``get_flops.py`` does) and for its
backbone alone, which is the number to compare backbones by.

Conventions (those of fvcore / mmengine): one FLOP is one multiply-add; only matrix products,
convolutions, norms and resampling are counted, element-wise ops are not (so the RoPE rotation
itself, softmax and GELU add nothing). ``F.scaled_dot_product_attention`` has no handle in
mmengine 0.10; this tool adds one (``q @ k^T`` plus ``attn @ v``) so that attention written
with it counts the same as attention written with explicit matmuls. Operators that no handle
covers (other than element-wise ones) are listed under "uncounted ops" (for a Mask R-CNN: NMS,
RoIAlign, max-pool).
"""
from __future__ import annotations

import argparse
import json
import math
import os.path as osp
import sys
from collections import Counter
from typing import Any, Optional, Sequence

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape
from mmengine.analysis.print_helper import _format_size
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
from ropevit.cli import KeyValueAction, OneLineArgumentParser, ToolError, config_stage, run_tool  # noqa: E402

SDPA_OP = 'aten::scaled_dot_product_attention'
# Element-wise / data-movement ops: uncounted by convention, so not worth listing as "uncounted".
ELEMENTWISE_OPS = frozenset(
    f'aten::{name}' for name in (
        'add', 'add_', 'sub', 'sub_', 'rsub', 'mul', 'mul_', 'div', 'div_', 'neg', 'exp', 'log', 'log2',
        'sqrt', 'rsqrt', 'pow', 'sin', 'cos', 'abs', 'sign', 'gelu', 'relu', 'relu_', 'silu', 'sigmoid',
        'tanh', 'softmax', 'log_softmax', 'fill_', 'zero_', 'ne', 'lt', 'le', 'where', 'repeat', 'pad',
        'sum', 'mean', 'roll', 'stack', 'im2col', 'col2im', 'unbind', 'type_as', 'to', 'clone',
        'new_zeros', 'ones_like', 'zeros_like', 'masked_fill_', 'argmax', 'topk', 'sort', 'lerp',
        'meshgrid', 'unflatten', 'linspace', 'dropout', 'feature_dropout'))


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds of ``softmax(q k^T) v``: ``q [..., Nq, hd]``, ``k [..., Nk, hd]``, ``v [..., Nk, hdv]``."""
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    if q_shape is None or k_shape is None or v_shape is None:
        raise ValueError('scaled_dot_product_attention traced without complete shapes')
    batch = math.prod(q_shape[:-2])                     # B * nh (any leading dims)
    n_q, head_dim = q_shape[-2], q_shape[-1]
    n_k, head_dim_v = k_shape[-2], v_shape[-1]
    return batch * n_q * n_k * (head_dim + head_dim_v)


def count_flops(model: nn.Module, inputs: tuple) -> tuple[int, Counter]:
    """Total FLOPs (multiply-adds) of ``model(*inputs)`` and the operators nothing counted."""
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**{SDPA_OP: sdpa_flop_jit})
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(analyzer.total()), analyzer.unsupported_ops()


def rope_settings(backbone: nn.Module) -> dict[str, Any]:
    """RoPE configuration read off a built backbone (``{'type': 'none'}`` for a backbone without RoPE).

    Reads the attributes the ropevit backbones keep (``rope_type``, ``rope_theta``, ``window_size``,
    ``use_abs_pos`` / ``use_rpb`` where present) and classifies the frequencies by what the
    module holds: learnable frequencies are parameters, fixed ones are (non-persistent) buffers.
    """
    rope = getattr(backbone, 'rope_type', None)
    if not isinstance(rope, str):
        return {'type': 'none'}
    freq_params = [(n, p) for n, p in backbone.named_parameters() if 'freq' in n]
    freq_buffers = [n for n, _ in backbone.named_buffers() if 'freq' in n]
    info: dict[str, Any] = {
        'type': rope,
        'theta': getattr(backbone, 'rope_theta', None),
        'frequencies': ('learnable' if any(p.requires_grad for _, p in freq_params)
                        else 'fixed' if (freq_buffers or freq_params) else ('none' if rope == 'none' else 'fixed')),
        'learnable_frequency_params': sum(p.numel() for _, p in freq_params if p.requires_grad),
    }
    for key in ('rope_coords', 'num_prefix_tokens', 'window_size', 'global_attn_indexes', 'window_block_indexes',
                'use_abs_pos', 'use_ape',
                'use_rpb', 'mask_padding', 'patch_size', 'arch_settings', 'embed_dims', 'num_heads', 'depths',
                'depth'):
        value = getattr(backbone, key, None)
        if isinstance(value, (int, float, bool, str, tuple, list, dict)) and not isinstance(value, nn.Module):
            info[key] = _plain(value)
    return info


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so the settings print and serialise as JSON alike."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _data_samples(scope: str, hw: tuple[int, int]) -> Optional[list]:
    """One data sample carrying the meta information a detector / segmentor reads in ``_forward``."""
    meta = dict(img_shape=hw, ori_shape=hw, pad_shape=hw, batch_input_shape=hw, scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta)]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta)]
    return None


def default_shape(cfg: Config) -> tuple[int, int]:
    """The input size to analyse when ``--shape`` is not given: the seg crop, else mmdet's 800x1333."""
    crop = cfg.get('crop_size')
    if crop is not None:
        return int(crop[0]), int(crop[1])
    return (512, 512) if cfg.get('default_scope') == 'mmseg' else (800, 1333)


def analyze(cfg: Config, *, shape: tuple[int, int], backbone_only: bool = False,
            show_table: bool = False, seed: int = 0) -> dict[str, Any]:
    """Build ``cfg.model`` (random init, no checkpoint) and measure it on one ``[1, 3, H, W]`` input.

    ``seed`` fixes the random weights and input, so a detector's proposal count (and with it the
    RoI heads' FLOPs) is the same from run to run.
    """
    height, width = shape
    if height <= 0 or width <= 0:
        raise ValueError(f'--shape must be positive, got {shape}')
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model.copy())                      # no init_weights(): nothing is downloaded
    model.eval()
    if not hasattr(model, 'backbone'):
        raise ValueError(f'{type(model).__name__} has no .backbone; only detectors / segmentors are supported')
    backbone = model.backbone

    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, height, width, generator=generator)   # [1, 3, H, W], already normalised scale
    result: dict[str, Any] = {
        'config': cfg.filename, 'scope': scope, 'input_shape': [1, 3, height, width],
        'model': type(model).__name__, 'backbone': type(backbone).__name__,
        'backbone_params': int(parameter_count(backbone)['']),
        'model_params': int(parameter_count(model)['']),
        'rope': rope_settings(backbone),
    }
    with torch.no_grad():
        result['backbone_flops'], unsupported = count_flops(backbone, (x,))
        if not backbone_only:
            samples = _data_samples(scope, (height, width))
            forward = model.forward

            def tensor_forward(inputs: torch.Tensor):           # what mmdet's get_flops.py traces
                return forward(inputs, samples, mode='tensor')

            model.forward = tensor_forward
            try:
                result['model_flops'], unsupported_model = count_flops(model, (x,))
            finally:
                model.forward = forward
            unsupported = unsupported + unsupported_model
            if show_table:
                from mmengine.analysis.print_helper import flop_count_table
                analyzer = FlopAnalyzer(backbone, (x,)).set_op_handle(**{SDPA_OP: sdpa_flop_jit})
                analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                result['backbone_table'] = flop_count_table(analyzer, max_depth=3)
    result['uncounted_ops'] = {op: n for op, n in sorted(unsupported.items()) if op not in ELEMENTWISE_OPS}
    for key in ('backbone_flops', 'model_flops'):
        if key in result and not math.isfinite(result[key]):
            raise RuntimeError(f'{key} is not finite: {result[key]}')
    return result


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"config:      {result['config']}",
        f"input:       {tuple(result['input_shape'])}   (scope {result['scope']})",
        f"model:       {result['model']:<20} params {_format_size(result['model_params']):>8}"
        + (f"   FLOPs {_format_size(result['model_flops']):>8}" if 'model_flops' in result else ''),
        f"backbone:    {result['backbone']:<20} params {_format_size(result['backbone_params']):>8}"
        f"   FLOPs {_format_size(result['backbone_flops']):>8}",
    ]
    rope = result['rope']
    lines.append('rope:        ' + ', '.join(f'{k}={v}' for k, v in rope.items()))
    if result['uncounted_ops']:
        lines.append('uncounted ops: ' + ', '.join(f'{k} x{v}' for k, v in result['uncounted_ops'].items()))
    lines.append('(FLOPs = multiply-adds of matmul/conv/norm ops, mmengine convention; element-wise ops '
                 'such as the RoPE rotation are not counted)')
    if 'backbone_table' in result:
        lines += ['', result['backbone_table']]
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file (mmdet or mmseg)')
    parser.add_argument('--shape', type=int, nargs='+', default=None, metavar='SIZE',
                        help='input size: H W, or one number for a square; default: the seg crop '
                             'size, or 800 1333 for detection')
    parser.add_argument('--backbone-only', action='store_true', help='skip the whole-model count')
    parser.add_argument('--show-table', action='store_true', help='also print the backbone per-module table')
    parser.add_argument('--json', default=None, metavar='OUT', help='also write the numbers to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction, help='override config settings')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise ToolError(f'config file not found: {args.config!r}')
    if args.json and osp.exists(args.json) and osp.samefile(args.json, args.config):
        raise ToolError(f'--json {args.json!r} is the config file; give another output path')
    with config_stage(args.config, 'reading'):
        cfg = Config.fromfile(args.config)              # runs custom_imports (ropevit.mm)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
    if args.shape is None:
        shape = default_shape(cfg)
    elif len(args.shape) in (1, 2):
        shape = (args.shape[0], args.shape[-1])
    else:
        raise ToolError(f'--shape takes H W or one size, got {args.shape}')
    with config_stage(args.config, 'building the model of'):
        result = analyze(cfg, shape=shape, backbone_only=args.backbone_only, show_table=args.show_table)
    print(format_report(result))
    if args.json:
        from ropevit.fileio import atomic_write
        with atomic_write(args.json, 'w') as f:
            json.dump({k: v for k, v in result.items() if k != 'backbone_table'}, f, indent=2)
    return result


if __name__ == '__main__':
    sys.exit(run_tool(main))
