"""Shared by tools/train.py and tools/test.py: the scope-aware set-up of a config."""
from __future__ import annotations

import os
import os.path as osp
import sys
from typing import Callable, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

SCOPES = ('mmdet', 'mmseg')


def load_config(path: str, cfg_options: Optional[dict], work_dir: Optional[str]):
    """Read a config, apply ``--cfg-options``, register the scope's modules and ropevit's.

    Detection and segmentation configs are told apart by ``default_scope`` (mmdet / mmseg).
    """
    from mmengine.config import Config
    if not osp.isfile(path):
        raise SystemExit(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    if scope not in SCOPES:
        raise SystemExit(f'{path}: default_scope={scope!r} is not supported; allowed: {SCOPES}')
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules
    else:
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    import ropevit.mm  # noqa: F401  (RoPE backbones, compat fixes)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def check_data_or_exit(cfg, which) -> None:
    from ropevit.mm.data_check import DatasetNotFoundError, check_datasets
    try:
        check_datasets(cfg, which=which)
    except DatasetNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2)


def run_explaining_data_errors(run: Callable[[], object], cfg, which) -> None:
    """``run()``; if it fails and a data set of ``cfg`` turns out to be empty (an annotation file with
    no images, an empty image folder), exit 2 with that explanation instead of the library's
    traceback (e.g. numpy's ``need at least one array to concatenate``)."""
    try:
        run()
    except Exception:
        from ropevit.mm.data_check import explain_empty_datasets
        problem = explain_empty_datasets(cfg, which=which)
        if problem is None:
            raise
        print(f'error: {problem}', file=sys.stderr)
        raise SystemExit(2)


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def setup_local_rank(local_rank: Optional[int]) -> None:
    if local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)
