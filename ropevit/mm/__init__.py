"""The only place where ropevit registers into mmengine / mmdet / mmseg.

Configs pull it in with::

    custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)

Modules are registered in mmengine's root registries, which are parents of mmdet's
and mmseg's, so the same ``type='RoPESwin'`` resolves under either default scope.

Importing it registers and changes nothing else (``tests/mm/test_mm_import.py``). The reliability
fixes of docs/RELIABILITY.md are opt-in: the hooks by name in a config, the rest with
``'ropevit.mm.fixes'`` in ``custom_imports`` (:mod:`ropevit.mm.runtime`). ropevit's own configs and
tools turn them all on.
"""
from . import swin  # noqa: F401  (RoPESwin backbone)
from . import vit  # noqa: F401  (RoPEViT backbone, SimpleFPN neck)
from . import optim  # noqa: F401  (RoPEOptimWrapperConstructor, LayerDecayOptimWrapperConstructor: opt-in by name)
from . import strict_load  # noqa: F401  (StrictLoadHook: opt-in by name, ropevit's tools add it)
from . import checkpoint_hook  # noqa: F401  (AtomicCheckpointHook: opt-in, default_hooks.checkpoint)
from . import rng_state_hook  # noqa: F401  (RNGStateHook: opt-in, custom_hooks)
