"""The only place where ropevit registers into mmengine / mmdet / mmseg.

Configs pull it in with::

    custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)

Modules are registered in mmengine's root registries, which are parents of mmdet's
and mmseg's, so the same ``type='RoPESwin'`` resolves under either default scope.
"""
from . import compat  # noqa: F401  (applies the torch >= 2.6 checkpoint fixes)
from . import reliability  # noqa: F401  (atomic checkpoints, exact resume: docs/RELIABILITY.md)
from . import swin  # noqa: F401  (RoPESwin backbone)
from . import vit  # noqa: F401  (RoPEViT backbone, SimpleFPN neck)
from . import optim  # noqa: F401  (RoPEOptimWrapperConstructor, LayerDecayOptimWrapperConstructor: opt-in by name)
from . import strict_load  # noqa: F401  (StrictLoadHook: opt-in by name, ropevit's tools add it)
