"""Resolution extrapolation sweep: evaluate trained mmseg / mmdet models at several test scales.

For every ``(config, checkpoint[, name])`` and every scale ``s`` the test pipeline's ``Resize``
target is multiplied by ``s`` (``scale=(W, H)`` -> ``(round(s*W), round(s*H))``, or
``scale_factor`` -> ``s * scale_factor``), mmengine's ``TestLoop`` runs with the config's own
evaluator (``IoUMetric`` for segmentation, ``CocoMetric`` for detection), and the metric is written
to a markdown table (rows = scale, columns = models) and a PNG plot (metric vs scale, one line per
model). A forward pre-hook on the backbone records the input size each model really saw.

Segmentors are evaluated with ``test_cfg.mode='whole'``, so the backbone sees the whole resized
image (sliding-window inference would feed it fixed-size crops whatever the scale). With
``--window-size N``, models whose backbone has a ``window_size`` are evaluated a second time with
that window (a relative position bias table, if any, is resized bicubically). With
``--rope-coords interpolate normalized ...``, models whose backbone has RoPE are evaluated once more
per coordinate rule, without retraining (``rope_coords`` of RoPEViT / RoPESwin;
``--rope-ref-size`` sets the reference size of ``'interpolate'``). ``--data-prefix IMG SEG``, once
per scale, evaluates each scale on its own split (larger scenes at the same object scale).

Usage::

    python projects/resolution_extrapolation/sweep.py \\
        --model CONFIG_A CKPT_A ape --model CONFIG_B CKPT_B rope-mixed \\
        --scales 0.5 0.75 1 1.25 1.5 2 --out-dir work_dirs/extrapolation
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import numbers
import os
import os.path as osp
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Sequence

import torch
from mmengine.config import Config, ConfigDict
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner, TestLoop

from ropevit.checkpoint.common import CheckpointMismatchError
from ropevit.checkpoint.swin import resize_bias_table
from ropevit.fileio import atomic_write

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:        # aggregate.py beside this file (also when loaded by path, as the tests do)
    sys.path.insert(0, HERE)
from aggregate import plot_vs_scale  # noqa: E402

Task = Literal['seg', 'det']
TASK_OF_SCOPE: dict[str, Task] = {'mmseg': 'seg', 'mmdet': 'det'}
DEFAULT_METRIC: dict[Task, str] = {'seg': 'mIoU', 'det': 'coco/bbox_mAP'}
# Keys of a state dict that depend on the window size (mmdet / ropevit Swin layouts).
_BIAS_TABLE, _BIAS_INDEX = 'relative_position_bias_table', 'relative_position_index'


class CheckpointConfigMismatchError(CheckpointMismatchError):
    """The checkpoint was not trained with this config (missing / unexpected keys or shapes)."""


@dataclass
class ModelSpec:
    config: str
    checkpoint: str
    name: str


@dataclass
class SweepResult:
    metric: str
    scales: list[float]
    columns: list[str]
    values: dict[str, list[float]]                                   # column -> one value per scale
    input_hw: dict[str, list[list[tuple[int, int]]]] = field(default_factory=dict)  # column -> per scale

    def to_markdown(self) -> str:
        head = f'| test scale | backbone input (H×W) | ' + ' | '.join(self.columns) + ' |'
        rule = '|---:|:---:|' + '---:|' * len(self.columns)
        rows = [f'_{self.metric}_', '', head, rule]
        for i, s in enumerate(self.scales):
            shapes = sorted({_most_common(self.input_hw[c][i]) for c in self.columns})
            shape_txt = ' / '.join(f'{h}×{w}' for h, w in shapes)
            cells = ' | '.join(_fmt(self.values[c][i]) for c in self.columns)
            rows.append(f'| {s:g}x | {shape_txt} | {cells} |')
        return '\n'.join(rows) + '\n'

    def to_json(self) -> dict[str, Any]:
        return dict(metric=self.metric, scales=self.scales, columns=self.columns, values=self.values,
                    input_hw={c: [[list(hw) for hw in per] for per in v] for c, v in self.input_hw.items()})


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f'{v:.2f}' if abs(v) > 1 else f'{v:.3f}'                    # mIoU in %, COCO mAP in [0, 1]


def _most_common(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    return Counter(shapes).most_common(1)[0][0] if shapes else (0, 0)


# ----------------------------------------------------------------------------- config surgery

def task_of(cfg: Config) -> Task:
    """``'seg'`` for an mmseg config, ``'det'`` for an mmdet one (by ``default_scope``)."""
    scope = cfg.get('default_scope')
    if scope not in TASK_OF_SCOPE:
        raise ValueError(f'config {cfg.filename}: default_scope={scope!r}; the sweep supports '
                         f"{sorted(TASK_OF_SCOPE)} (segmentation with IoUMetric, detection with CocoMetric)")
    return TASK_OF_SCOPE[scope]


def _is_resize(t: dict) -> bool:
    return str(t.get('type', '')).split('.')[-1] == 'Resize'


def scale_pipeline(pipeline: Sequence[dict], scale: float) -> list[dict]:
    """A copy of ``pipeline`` whose ``Resize`` transforms target ``scale`` times their size."""
    if not scale > 0:
        raise ValueError(f'test scale must be > 0, got {scale}')
    out = copy.deepcopy(list(pipeline))
    resizes = [t for t in out if _is_resize(t)]
    if not resizes:
        raise ValueError('test pipeline has no Resize transform (types: '
                         f'{[t.get("type") for t in out]}); the sweep changes the test scale through it')
    for t in resizes:
        if t.get('scale') is not None:
            size = t['scale']
            t['scale'] = (round(size * scale) if isinstance(size, (int, float))
                          else tuple(round(v * scale) for v in size))
        elif t.get('scale_factor') is not None:
            f = t['scale_factor']
            t['scale_factor'] = f * scale if isinstance(f, (int, float)) else tuple(v * scale for v in f)
        else:
            raise ValueError(f'Resize {t} has neither `scale` nor `scale_factor`')
    return out


def _dataset_with_pipeline(dataset: dict) -> dict:
    """The (possibly wrapped) dataset config that holds ``pipeline``."""
    if 'pipeline' in dataset:
        return dataset
    if isinstance(dataset.get('dataset'), dict):
        return _dataset_with_pipeline(dataset['dataset'])
    raise ValueError(f'cannot find the test pipeline in dataset config of type {dataset.get("type")!r}')


def scaled_test_dataloader(cfg: Config, scale: float) -> dict:
    dataloader = copy.deepcopy(cfg.test_dataloader)
    dataset = _dataset_with_pipeline(dataloader['dataset'])
    dataset['pipeline'] = scale_pipeline(dataset['pipeline'], scale)
    return dataloader


def _check_model_type(cfg: Config, task: Task) -> None:
    """Clear error if ``model.type`` is not a registered segmentor / detector."""
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    if task == 'seg':
        from mmseg.models.segmentors import BaseSegmentor as Base
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    else:
        from mmdet.models.detectors import BaseDetector as Base
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    model_type = cfg.model.get('type')
    cls = MODELS.get(model_type) if isinstance(model_type, str) else model_type
    if not (isinstance(cls, type) and issubclass(cls, Base)):
        known = sorted(k for k, v in MODELS.module_dict.items() if isinstance(v, type) and issubclass(v, Base))
        kind = 'segmentor' if task == 'seg' else 'detector'
        raise ValueError(f'unknown model type {model_type!r} in {cfg.filename}: not a registered {kind} of '
                         f'{cfg.default_scope}; known: {known}')


ROPE_BACKBONES = ('RoPEViT', 'RoPESwin')


def has_rope(backbone: dict) -> bool:
    """Whether a backbone config is a ropevit backbone with RoPE (the coordinate rules apply)."""
    kind = str(backbone.get('type', '')).split('.')[-1]
    return kind in ROPE_BACKBONES and backbone.get('rope', 'mixed') != 'none'


def set_rope_coords(backbone: dict, rope_coords: str, ref_size: Optional[int] = None, *, config: str = '') -> None:
    """Switch a trained backbone config to another coordinate rule (test time: no augmentation)."""
    from ropevit.layers.rope_coords import check_rope_coords
    if not has_rope(backbone):
        raise ValueError(f'--rope-coords {rope_coords}: backbone {backbone.get("type")!r} of {config} has no '
                         f'RoPE (allowed: {ROPE_BACKBONES} with rope != "none")')
    check_rope_coords(rope_coords, ref_size)
    backbone['rope_coords'] = rope_coords
    backbone.pop('rope_coords_aug', None)              # train-time only, and only valid with 'normalized'
    if ref_size is not None:
        backbone['rope_ref_size'] = ref_size


def prepare_config(config: str | Config, *, work_dir: str, window_size: Optional[int] = None,
                   rope_coords: Optional[str] = None, rope_ref_size: Optional[int] = None) -> Config:
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    task = task_of(cfg)
    for key in ('test_dataloader', 'test_evaluator', 'model'):
        if not cfg.get(key):
            raise ValueError(f'config {cfg.filename} has no {key}; the sweep runs its test loop')
    _check_model_type(cfg, task)
    if task == 'seg':
        cfg.model.test_cfg = dict(mode='whole')
    if window_size is not None:
        backbone = cfg.model.get('backbone', {})
        if 'window_size' not in backbone:
            raise ValueError(f'--window-size {window_size}: backbone {backbone.get("type")!r} of '
                             f'{cfg.filename} has no window_size')
        backbone['window_size'] = window_size
    if rope_coords is not None:
        set_rope_coords(cfg.model.backbone, rope_coords, rope_ref_size, config=cfg.filename)
    cfg.work_dir = work_dir
    cfg.load_from, cfg.resume = None, False
    cfg.test_cfg = cfg.get('test_cfg') or dict(type='TestLoop')
    cfg.log_level = 'WARNING'
    cfg.visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
    cfg.default_hooks = dict(timer=dict(type='IterTimerHook'))
    cfg.custom_hooks = []
    return cfg


# ----------------------------------------------------------------------------- checkpoint

def load_trained_checkpoint(model: torch.nn.Module, path: str, *, config: str = '',
                            window_changed: bool = False) -> None:
    """Load a checkpoint trained with this config strictly: every key and shape must match.

    With ``window_changed`` the window-dependent relative position bias tables are resized and
    their index buffers taken from the model. Raises :class:`CheckpointConfigMismatchError`
    naming the keys that do not fit.
    """
    from ropevit.checkpoint.common import unwrap_state_dict
    from ropevit.checkpoint.io import load_checkpoint_file
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    state = unwrap_state_dict(load_checkpoint_file(path, map_location='cpu'))
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    if window_changed:
        for k in list(state):
            if k in own and own[k].shape != state[k].shape:
                if k.endswith(_BIAS_TABLE):
                    state[k] = resize_bias_table(state[k], own[k].shape[0])
                elif k.endswith(_BIAS_INDEX):
                    state[k] = own[k]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        def _few(keys: list[str]) -> str:
            return f'{keys[:10]}{" ... (%d in all)" % len(keys) if len(keys) > 10 else ""}'
        parts = [f'{what} {_few(keys)}' for what, keys in
                 (('shape mismatches', shapes), ('missing keys', missing), ('unexpected keys', unexpected)) if keys]
        raise CheckpointConfigMismatchError(
            f'checkpoint {path} does not match the model of {config or type(model).__name__}: ' + '; '.join(parts))
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- evaluation

def build_runner(spec: ModelSpec, *, work_dir: str, window_size: Optional[int] = None,
                 rope_coords: Optional[str] = None, rope_ref_size: Optional[int] = None) -> Runner:
    """A Runner for ``spec.config`` with the trained weights loaded (strictly), optionally with
    another window size or RoPE coordinate rule."""
    cfg = prepare_config(spec.config, work_dir=work_dir, window_size=window_size, rope_coords=rope_coords,
                         rope_ref_size=rope_ref_size)
    runner = Runner.from_cfg(cfg)
    runner.call_hook('before_run')                                      # as Runner.test() does (log paths)
    load_trained_checkpoint(unwrap(runner.model), spec.checkpoint, config=spec.config,
                            window_changed=window_size is not None)
    return runner


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if is_model_wrapper(model) else model


def evaluate_at_scale(runner: Runner, scale: float, data_prefix: Optional[dict] = None
                      ) -> tuple[dict[str, float], list[tuple[int, int]]]:
    """Run the config's test loop with the Resize target times ``scale`` (on the split of
    ``data_prefix`` = ``dict(img_path, seg_map_path)`` if given).

    Returns the metrics and the ``(H, W)`` of every batch the backbone saw.
    """
    cfg = runner.cfg
    seen: list[tuple[int, int]] = []

    def record(_module: torch.nn.Module, args: tuple) -> None:
        seen.append(tuple(args[0].shape[-2:]))                           # args[0]: [B, 3, H, W]

    model = unwrap(runner.model)
    handle = model.backbone.register_forward_pre_hook(record)
    try:
        dataloader = scaled_test_dataloader(cfg, scale)
        if data_prefix is not None:
            dataset = _dataset_with_pipeline(dataloader['dataset'])
            root = dataset.get('data_root') or ''
            for path in data_prefix.values():
                if not osp.isdir(osp.join(root, path)):
                    raise FileNotFoundError(f'--data-prefix: {osp.join(root, path)} is not a folder '
                                            f'(projects/resolution_extrapolation/make_data.py writes the study\'s)')
            dataset['data_prefix'] = dict(data_prefix)
        loop = TestLoop(runner, dataloader, copy.deepcopy(cfg.test_evaluator))
        metrics = loop.run()
    finally:
        handle.remove()
    return {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}, seen   # numpy scalars too


def sweep(specs: Sequence[ModelSpec], scales: Sequence[float], *, work_dir: str,
          window_size: Optional[int] = None, metric: Optional[str] = None,
          rope_coords: Sequence[str] = (), rope_ref_size: Optional[int] = None,
          rope_coords_models: Optional[Sequence[str]] = None, data_prefixes: Optional[Sequence[dict]] = None,
          log: Callable[[str], None] = print) -> SweepResult:
    """Evaluate every model at every scale (and, for windowed backbones, with ``window_size``; for
    RoPE backbones, with every coordinate rule of ``rope_coords`` other than the trained one).

    ``rope_coords_models``: the names of the models ``rope_coords`` applies to (default: all).
    ``data_prefixes``: one ``dict(img_path, seg_map_path)`` per scale (its own split per scale).
    """
    if not specs:
        raise ValueError('no models given')
    if not scales:
        raise ValueError('no test scales given')
    if data_prefixes is not None and len(data_prefixes) != len(scales):
        raise ValueError(f'{len(data_prefixes)} data prefixes for {len(scales)} scales; give one per scale')
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f'model names must be unique, got {names}')
    unknown = sorted(set(rope_coords_models or ()) - set(names))
    if unknown:
        raise ValueError(f'--rope-coords-models: {unknown} are not model names; the models are {names}')
    tasks = {task_of(Config.fromfile(s.config)) for s in specs}
    if len(tasks) > 1 and metric is None:
        raise ValueError('segmentation and detection models need one --metric to share a table')
    metric = metric or DEFAULT_METRIC[tasks.pop()]
    columns: list[str] = []
    values: dict[str, list[float]] = {}
    input_hw: dict[str, list[list[tuple[int, int]]]] = {}
    for spec in specs:
        backbone = Config.fromfile(spec.config).model.get('backbone', {})
        runs: list[tuple[str, Optional[int], Optional[str]]] = [(spec.name, None, None)]
        if window_size is not None and 'window_size' in backbone:
            runs.append((f'{spec.name} (window {window_size})', window_size, None))
        if has_rope(backbone) and (rope_coords_models is None or spec.name in rope_coords_models):
            trained = backbone.get('rope_coords', 'index')
            runs += [(f'{spec.name} ({c})', None, c) for c in rope_coords if c != trained]
        for column, ws, coords in runs:
            runner = build_runner(spec, work_dir=osp.join(work_dir, 'runs', column.replace(' ', '_')),
                                  window_size=ws, rope_coords=coords, rope_ref_size=rope_ref_size)
            columns.append(column)
            values[column], input_hw[column] = [], []
            for i, s in enumerate(scales):
                metrics, seen = evaluate_at_scale(runner, s, None if data_prefixes is None else data_prefixes[i])
                if metric not in metrics:
                    raise KeyError(f'metric {metric!r} not reported by {spec.config}; got {sorted(metrics)}')
                values[column].append(metrics[metric])
                input_hw[column].append(seen)
                log(f'{column:>28s}  scale {s:g}x  input {_most_common(seen)}  {metric} {metrics[metric]:.2f}')
    return SweepResult(metric=metric, scales=list(scales), columns=columns, values=values, input_hw=input_hw)


def plot(result: SweepResult, path: str, *, title: str = 'Resolution extrapolation') -> None:
    plot_vs_scale(path, result.scales, {c: result.values[c] for c in result.columns}, ylabel=result.metric,
                  title=title, xlabel='test scale (× training/test resolution)')


def write_outputs(result: SweepResult, out_dir: str, *, title: str = 'Resolution extrapolation') -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(table=osp.join(out_dir, 'results.md'), json=osp.join(out_dir, 'results.json'),
                 plot=osp.join(out_dir, 'results.png'))
    with atomic_write(paths['table'], 'w') as f:
        f.write(result.to_markdown())
    with atomic_write(paths['json'], 'w') as f:
        json.dump(result.to_json(), f, indent=1)
    plot(result, paths['plot'], title=title)
    return paths


# ----------------------------------------------------------------------------- command line

def parse_model(values: list[str]) -> ModelSpec:
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f'--model takes CONFIG CHECKPOINT [NAME], got {values}')
    name = values[2] if len(values) == 3 else osp.splitext(osp.basename(values[0]))[0]
    return ModelSpec(config=values[0], checkpoint=values[1], name=name)


def main(argv: Optional[Sequence[str]] = None) -> SweepResult:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', nargs='+', action='append', required=True, metavar='ARG',
                        help='CONFIG CHECKPOINT [NAME]; repeat for more models')
    parser.add_argument('--scales', nargs='+', type=float, default=[0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
                        help='test scales relative to the test pipeline Resize (default 0.5..2)')
    parser.add_argument('--window-size', type=int, default=None,
                        help='also evaluate windowed backbones with this window size')
    parser.add_argument('--rope-coords', nargs='+', default=[], choices=['index', 'interpolate', 'normalized'],
                        help='also evaluate RoPE backbones with these coordinate rules (no retraining)')
    parser.add_argument('--rope-coords-models', nargs='+', default=None, metavar='NAME',
                        help='apply --rope-coords to these models only (default: every RoPE model)')
    parser.add_argument('--rope-ref-size', type=int, default=None,
                        help="reference image size (px) of --rope-coords interpolate (default: the backbone's)")
    parser.add_argument('--data-prefix', nargs=2, action='append', default=None, metavar=('IMG', 'SEG'),
                        help='evaluate a scale on this split (relative to data_root); give one per scale')
    parser.add_argument('--metric', default=None, help='metric key (default mIoU / coco/bbox_mAP)')
    parser.add_argument('--out-dir', default='work_dirs/resolution_extrapolation')
    parser.add_argument('--title', default='Resolution extrapolation')
    args = parser.parse_args(argv)
    try:
        specs = [parse_model(m) for m in args.model]
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    prefixes = None
    if args.data_prefix is not None:
        if len(args.data_prefix) != len(args.scales):
            parser.error(f'--data-prefix given {len(args.data_prefix)} times for {len(args.scales)} scales; '
                         f'give one per scale')
        prefixes = [dict(img_path=i, seg_map_path=m) for i, m in args.data_prefix]
    result = sweep(specs, args.scales, work_dir=args.out_dir, window_size=args.window_size, metric=args.metric,
                   rope_coords=args.rope_coords, rope_ref_size=args.rope_ref_size,
                   rope_coords_models=args.rope_coords_models, data_prefixes=prefixes)
    paths = write_outputs(result, args.out_dir, title=args.title)
    print(result.to_markdown())
    print('wrote ' + ', '.join(paths.values()))
    return result


if __name__ == '__main__':
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    if root not in sys.path:                                            # run from a checkout
        sys.path.insert(0, root)
    from ropevit.cli import run_tool
    sys.exit(run_tool(main))
