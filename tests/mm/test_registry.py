"""The registration layer: ropevit's modules resolve from mmdet and from mmseg scopes."""
import pytest
from mmengine.registry import DefaultScope

import ropevit.mm  # noqa: F401

MODULES = ['RoPEViT', 'RoPESwin', 'SimpleFPN']


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('name', MODULES)
def test_models_visible_from_downstream_scope(scope, name):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        cls = MODELS.get(name)
    assert cls is not None and cls.__name__ == name
    assert cls.__module__.startswith('ropevit.mm')


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_optim_constructor_visible(scope):
    registry = __import__(f'{scope}.registry', fromlist=['OPTIM_WRAPPER_CONSTRUCTORS'])
    with DefaultScope.overwrite_default_scope(scope):
        assert registry.OPTIM_WRAPPER_CONSTRUCTORS.get('LayerDecayOptimWrapperConstructor') is not None


def test_build_backbone_under_mmdet_scope():
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(dict(type='RoPESwin', embed_dims=32, depths=(1, 1, 1, 1),
                                  num_heads=(1, 2, 4, 8), window_size=4, rope='mixed'))
    assert type(model).__name__ == 'RoPESwin'
