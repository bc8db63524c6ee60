"""Shared by the tools: the scope-aware set-up of a config, and the checks that turn bad input into a
one-line error before anything is built or written (ropevit/cli.py prints them; docs/RELIABILITY.md
lists every case with its test)."""
from __future__ import annotations

import logging
import os
import os.path as osp
import re
import sys
import warnings
from typing import Any, Callable, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from ropevit.cli import (KeyValueAction, OneLineArgumentParser, PartialFailure, ToolError,  # noqa: E402,F401
                         config_stage, exit_tool, run_tool)

# Library noise on every start (mmcv/mmdet import pkg_resources); an error stays the last line.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
warnings.filterwarnings('ignore', message='.*pkg_resources.*', category=DeprecationWarning)

SCOPES = ('mmdet', 'mmseg')
_CKPT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def add_common_args(p: OneLineArgumentParser, *, launcher: bool = True, partial_load: bool = True) -> None:
    p.add_argument('--cfg-options', nargs='+', action=KeyValueAction, metavar='KEY=VALUE',
                   help='override config entries: key=value')
    if launcher:
        p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
        p.add_argument('--local_rank', '--local-rank', type=int, default=None)
    if partial_load:
        p.add_argument('--allow-partial-load', action='store_true',
                       help='load a whole-model checkpoint (load_from, --resume, CHECKPOINT) that does not fit '
                            'the config, with a warning naming the keys, instead of refusing it')


# ------------------------------------------------------------------------------------------------ config
def read_config(path: str, cfg_options: Optional[dict], work_dir: Optional[str]):
    """Read a config and apply ``--cfg-options``, without importing its modules (``custom_imports``,
    the scope's registries): every check of paths and values that needs no model runs before torch,
    mmdet and mmseg are imported, so bad input is refused in about a second."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise ToolError(f'config file not found: {path!r} (cwd: {os.getcwd()}); give the path of a config '
                        f'such as configs/demo/mask_rcnn_rope_swin_demo.py')
    with config_stage(path, 'reading'):
        cfg = Config.fromfile(path, import_custom_modules=False)
        if cfg_options:
            _prepare_for_options(cfg, cfg_options, path)
            cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    if scope not in SCOPES:
        raise ToolError(f'{path}: default_scope={scope!r} is not supported; allowed: {SCOPES}')
    check_pretrained_values(cfg, path)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def register_modules(cfg, path: str) -> None:
    """Import what the config needs: its ``custom_imports``, the scope's modules (mmdet / mmseg) and
    ropevit's (RoPE backbones, hooks), and turn on ropevit's runtime fixes (:mod:`ropevit.mm.runtime`:
    checkpoint loading on torch >= 2.6, resume past unreadable checkpoints, AMP and DDP on CPUs)."""
    with config_stage(path, 'importing the modules of'):
        custom = cfg.get('custom_imports')
        if custom:
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**custom)
        if cfg.get('default_scope', 'mmdet') == 'mmdet':
            from mmdet.utils import register_all_modules
        else:
            from mmseg.utils import register_all_modules
        register_all_modules(init_default_scope=False)
        import ropevit.mm  # noqa: F401  (RoPE backbones, StrictLoadHook, AtomicCheckpointHook, RNGStateHook)
        from ropevit.mm import runtime
        runtime.enable()


def load_config(path: str, cfg_options: Optional[dict], work_dir: Optional[str]):
    """:func:`read_config` and :func:`register_modules`: a config ready to build.

    Detection and segmentation configs are told apart by ``default_scope`` (mmdet / mmseg).
    """
    cfg = read_config(path, cfg_options, work_dir)
    register_modules(cfg, path)
    return cfg


def _prepare_for_options(cfg: Any, options: dict, path: str) -> None:
    """``--cfg-options a.b.c=V`` where ``a.b`` is None in the config: MMEngine refuses to merge a dict
    into None (a TypeError about "child" and "base" configs). ``init_cfg`` (None in the demo config)
    becomes ``dict(type='Pretrained')``, so the README's ``model.backbone.init_cfg.checkpoint=X`` works;
    any other None is named."""
    for key in options:
        parts = key.split('.')
        node = cfg  # a Config at the top (not a dict subclass), ConfigDicts below
        for i, part in enumerate(parts[:-1]):
            if not (isinstance(node, dict) or i == 0) or part not in node:
                break
            if node[part] is None:
                if part == 'init_cfg':
                    node[part] = dict(type='Pretrained')
                else:
                    head = '.'.join(parts[:i + 1])
                    raise ToolError(f'--cfg-options {key}=...: {head} is None in {path}, so it has no field '
                                    f'{parts[i + 1]!r}; set {head} to a dict in a config that inherits {path}')
                break
            node = node[part]


def _walk(node: Any, key_path: str):
    if isinstance(node, dict):
        yield key_path, node
        for k, v in node.items():
            yield from _walk(v, f'{key_path}.{k}' if key_path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f'{key_path}[{i}]')


def check_pretrained_values(cfg: Any, path: str, *, check_files: bool = False) -> None:
    """``pretrained`` / ``init_cfg.checkpoint`` values of the model: a path (str) or None, and a local
    file that exists. ``--cfg-options model.backbone.init_cfg.checkpoint=X`` on a config whose
    ``init_cfg`` is None (the demo's) means a pretrained load: the type is filled in. ``check_files``:
    also refuse a local checkpoint path that does not exist (tools/train.py, after the data check)."""
    for key_path, node in _walk(cfg.get('model') or {}, 'model'):
        pre = node.get('pretrained')
        if pre is not None and not isinstance(pre, str):
            raise ToolError(f'config {path}: {key_path}.pretrained={pre!r} ({type(pre).__name__}); allowed: '
                            f'a checkpoint path or URL (str) or None. Prefer '
                            f'{key_path}.init_cfg=dict(type="Pretrained", checkpoint=PATH)')
        init = node.get('init_cfg')
        for i, ic in enumerate(init if isinstance(init, (list, tuple)) else [init]):
            if not isinstance(ic, dict) or 'checkpoint' not in ic:
                continue
            where = f'{key_path}.init_cfg' + (f'[{i}]' if isinstance(init, (list, tuple)) else '')
            if 'type' not in ic:
                ic['type'] = 'Pretrained'  # the README's --cfg-options ...init_cfg.checkpoint=X on init_cfg=None
            ckpt = ic.get('checkpoint')
            if not isinstance(ckpt, str):
                raise ToolError(f'config {path}: {where}.checkpoint={ckpt!r} ({type(ckpt).__name__}); allowed: a '
                                f'checkpoint path or URL (str)')
            if check_files and ic.get('type') == 'Pretrained' and '://' not in ckpt \
                    and not osp.isfile(osp.expanduser(ckpt)):
                raise ToolError(f'config {path}: {where}.checkpoint {ckpt!r} does not exist (cwd: {os.getcwd()}); '
                                f'give the path of the pretrained checkpoint, or '
                                f'--cfg-options {where}=None to train from scratch')


def check_launcher(launcher: str) -> None:
    """The variables each launcher reads, present before MMEngine reads them (``KeyError: 'RANK'``)."""
    needs = {'pytorch': ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
             'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
             'mpi': ('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'MASTER_ADDR')}
    how = {'pytorch': 'start it with `torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch` or '
                      '`tools/dist_train.sh CONFIG N`',
           'slurm': 'start it with `srun ... python tools/train.py CONFIG --launcher slurm`',
           'mpi': 'start it with OpenMPI: `MASTER_ADDR=host0 mpirun -np N python tools/train.py CONFIG '
                  '--launcher mpi` (MASTER_ADDR: the host of rank 0)'}
    if launcher == 'none':
        return
    missing = [v for v in needs[launcher] if v not in os.environ]
    if missing:
        raise ToolError(f'--launcher {launcher}: the variables {", ".join(missing)} are not set, so this '
                        f'process was not started by the launcher; {how[launcher]}, or drop --launcher '
                        f'for one process')
    if launcher == 'mpi':
        import torch
        if not torch.cuda.is_available():
            raise ToolError('--launcher mpi needs CUDA (MMEngine\'s MPI set-up selects a GPU per rank); on '
                            'machines without GPUs use --launcher pytorch under torchrun (gloo)')


def add_strict_load_hook(cfg: Any, *, allow_partial: bool, source: Optional[str] = None) -> None:
    """Whole-model checkpoints (load_from, resume) must fit the model: ropevit.mm.strict_load."""
    hooks = [h for h in (cfg.get('custom_hooks') or []) if not (isinstance(h, dict) and h.get('type') ==
                                                                 'StrictLoadHook')]
    hooks.append(dict(type='StrictLoadHook', allow_partial=allow_partial))
    cfg.custom_hooks = hooks


def _hook_type(hook: Any) -> str:
    type_ = hook.get('type', '') if isinstance(hook, dict) else ''
    return (type_ if isinstance(type_, str) else getattr(type_, '__name__', '')).split('.')[-1]


def add_reliability_hooks(cfg: Any) -> None:
    """The hooks behind docs/RELIABILITY.md's checkpoint and resume guarantees, for a config that does
    not name them: ``AtomicCheckpointHook`` in place of a plain ``CheckpointHook`` (or of MMEngine's
    default one when ``default_hooks`` has no ``checkpoint``; ``checkpoint=None`` stays off), and
    ``RNGStateHook`` in ``custom_hooks``. ropevit's configs name both already."""
    hooks = cfg.get('default_hooks')
    if hooks is None:
        cfg.default_hooks = {}
        hooks = cfg.default_hooks
    if 'checkpoint' not in hooks:
        hooks['checkpoint'] = dict(type='AtomicCheckpointHook', interval=1)  # MMEngine's default, atomic
    elif _hook_type(hooks['checkpoint']) == 'CheckpointHook':
        hooks['checkpoint']['type'] = 'AtomicCheckpointHook'
    custom = list(cfg.get('custom_hooks') or [])
    if not any(_hook_type(h) == 'RNGStateHook' for h in custom):
        cfg.custom_hooks = custom + [dict(type='RNGStateHook')]


def build_runner(cfg, config_path: str = 'the config'):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    with config_stage(config_path, 'building the runner (model, hooks, loops) from'):
        if 'runner_type' in cfg:
            return RUNNERS.build(cfg)
        return Runner.from_cfg(cfg)


def setup_local_rank(local_rank: Optional[int]) -> None:
    if local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def check_checkpoint_file(path: str, what: str = 'checkpoint') -> None:
    """Exists and can be a torch file (cheap: before torch and the model are loaded)."""
    from ropevit.fileio import looks_like_torch_file
    if not osp.isfile(path):
        raise ToolError(f'{what} not found: {path!r}; give the .pth file written by tools/train.py '
                        f'(e.g. work_dirs/<config>/epoch_12.pth)')
    if not looks_like_torch_file(path):
        raise ToolError(f'could not read checkpoint {path} (truncated or not a torch checkpoint); give a '
                        f'complete checkpoint written by torch.save (tools/train.py writes them)')


def check_output_path(path: Optional[str], inputs: list[Optional[str]], what: str) -> None:
    from ropevit.fileio import refuse_overwriting_inputs
    if path:
        refuse_overwriting_inputs([path], [i for i in inputs if i], what=what)


# ------------------------------------------------------------------------------------------------ resume
def checkpoints_in(work_dir: str) -> list[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``work_dir``, and the file ``last_checkpoint`` names."""
    if not osp.isdir(work_dir):
        return []
    found = {osp.realpath(osp.join(work_dir, f)) for f in os.listdir(work_dir) if _CKPT_NAME.match(f)}
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            found.add(osp.realpath(named))
    return sorted(found, key=lambda p: (osp.getmtime(p), p))


def resolve_resume(cfg: Any, resume: Optional[str]) -> Optional[str]:
    """Decide where training starts; returns a warning to log, or None.

    * ``--resume`` (auto): the newest readable checkpoint of the work dir; none: a WARNING that the
      run starts from scratch (or from the config's ``load_from``), instead of MMEngine's INFO
      "resumed from None".
    * no ``--resume`` in a work dir that holds checkpoints: refused, since a new run from iteration 0
      would move ``last_checkpoint`` back and overwrite the newer checkpoints one by one.
    """
    work_dir = cfg.work_dir
    if resume is None:
        found = checkpoints_in(work_dir)
        if found:
            raise ToolError(
                f'work dir {work_dir!r} already holds checkpoints of an earlier run ({", ".join(map(osp.basename, found[-3:]))}); '
                f'a new run would restart at iteration 0 and move last_checkpoint back. Continue that run '
                f'with --resume, or give a new --work-dir (or delete the old checkpoints)')
        return None
    if resume != 'auto':
        if not osp.isfile(resume):
            raise ToolError(f'--resume {resume!r}: no such checkpoint file; give a checkpoint path, or '
                            f'--resume alone for the newest checkpoint of {work_dir!r}')
        check_checkpoint_file(resume)
        cfg.resume, cfg.load_from = True, resume
        return None
    from ropevit.mm.latest_checkpoint import find_latest_checkpoint
    latest = find_latest_checkpoint(work_dir) if osp.isdir(work_dir) else None
    if latest:
        cfg.resume, cfg.load_from = True, latest
        return None
    cfg.resume = False
    start = f"from load_from={cfg.load_from!r}" if cfg.get('load_from') else 'from scratch (iteration 0)'
    return f'--resume: no checkpoint in the work dir {work_dir!r}; this run starts {start}'


# -------------------------------------------------------------------------------------------------- data
def check_data_or_exit(cfg, which, *, annotations: bool = True) -> None:
    """Missing data (names the path and the expected layout) and, with ``annotations``, data that
    contradicts its annotation file (:func:`ropevit.datacheck.check_annotations`)."""
    from ropevit.datacheck import check_annotations, check_datasets
    check_datasets(cfg, which=which)
    if annotations:
        check_annotations(cfg, which=which)


_FAILED_IMAGE = re.compile(r'failed to load image: (\S+)')


def _undecodable_image(e: BaseException) -> Optional[str]:
    """The image file a data-loading failure names (mmcv's LoadImageFromFile), if it is one."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        m = _FAILED_IMAGE.search(str(e))
        if m:
            return m.group(1).rstrip("'\".,")
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename).lower().endswith(
                ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')):
            return str(e.filename)
        e = e.__cause__ or e.__context__
    return None


def run_explaining_data_errors(run: Callable[[], object], cfg, which) -> object:
    """``run()``; if it fails on data (an image that cannot be decoded, an empty data set), raise a
    one-line :class:`ToolError` naming the file instead of the library's traceback (e.g. numpy's
    ``need at least one array to concatenate``)."""
    try:
        return run()
    except ToolError:
        raise
    except Exception as e:
        from ropevit.cli import format_error
        if format_error(e) is not None:
            raise
        image = _undecodable_image(e)
        if image is not None:
            from ropevit.datacheck import diagnose_image
            reason = diagnose_image(image) or 'the decoder returned no image'
            raise ToolError(f'image {image!r} cannot be decoded ({reason}); replace the file or remove it '
                            f'from the annotation file') from e
        from ropevit.datacheck import explain_empty_datasets
        problem = explain_empty_datasets(cfg, which=which)
        if problem is None:
            raise
        raise ToolError(problem) from e


def log_warning(message: str) -> None:
    from mmengine.logging import print_log
    print_log(message, logger='current', level=logging.WARNING)
