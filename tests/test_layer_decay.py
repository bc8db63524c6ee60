"""LayerDecayOptimWrapperConstructor: lr multiplier per layer id and weight-decay flags."""
import pytest
import torch
from torch import nn

import ropevit.mm  # noqa: F401
from mmengine.optim import build_optim_wrapper
from ropevit.models import RoPEViT
from ropevit.models.swin import RoPESwin


class Detector(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(8, 2)


def _build(model, decay_rate=0.5, wd=0.05):
    return build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1.0, weight_decay=wd),
        constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=decay_rate)))


def _groups_by_param(wrapper):
    return {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}


def test_vit_groups_follow_layer_ids_and_decay_flags():
    vit = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=3), rope='mixed', use_ape=True)
    model = Detector(vit)
    wrapper = _build(model, decay_rate=0.5)
    by_param = _groups_by_param(wrapper)
    n = vit.num_layers
    for name, p in model.named_parameters():
        g = by_param[id(p)]
        if name == 'backbone.rope.freqs':   # one tensor for all blocks: stepped per block (test below)
            assert g['lr'] == pytest.approx(0.5 ** (n - 1 - vit.depth))
            assert g['slice_lr_scales'] == pytest.approx([0.5 ** (vit.depth - 1 - i) for i in range(vit.depth)])
        elif name.startswith('backbone.'):
            layer = vit.get_layer_id(name[len('backbone.'):])
            assert g['lr'] == pytest.approx(0.5 ** (n - 1 - layer)), name
        else:
            assert g['lr'] == 1.0, name
        no_decay = p.ndim == 1 or any(k in name for k in ('rope.freqs', 'pos_embed', 'cls_token'))
        assert g['weight_decay'] == (0.0 if no_decay else 0.05), name
    # Concrete anchors: the stem gets the smallest lr, the first block the next one.
    assert by_param[id(vit.patch_embed.proj.weight)]['lr'] == pytest.approx(0.5 ** (n - 1))
    assert by_param[id(vit.blocks[0].attn.qkv.weight)]['lr'] == pytest.approx(0.5 ** (n - 2))
    assert by_param[id(vit.rope.freqs)]['weight_decay'] == 0.0
    assert by_param[id(vit.pos_embed)]['weight_decay'] == 0.0
    assert by_param[id(vit.blocks[0].norm1.weight)]['weight_decay'] == 0.0
    assert by_param[id(vit.blocks[0].attn.qkv.bias)]['weight_decay'] == 0.0
    assert by_param[id(model.head.weight)]['weight_decay'] == 0.05
    # Every trainable parameter is in exactly one group.
    total = sum(len(g['params']) for g in wrapper.optimizer.param_groups)
    assert total == sum(1 for p in model.parameters() if p.requires_grad)


def test_swin_groups_are_stage_and_block_aware():
    swin = RoPESwin(embed_dims=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8), window_size=4, rope='mixed')
    wrapper = _build(Detector(swin), decay_rate=0.9)
    by_param = _groups_by_param(wrapper)
    n = swin.num_layers
    qkv = [swin.stages[s].blocks[b].attn.w_msa.qkv.weight for s, b in ((0, 0), (1, 0), (1, 1), (2, 0))]
    lrs = [by_param[id(p)]['lr'] for p in qkv]
    assert lrs == sorted(lrs) and len(set(lrs)) == 4  # strictly later blocks, larger lr
    assert lrs[-1] == pytest.approx(0.9 ** (n - 1 - 4))
    assert by_param[id(swin.stages[0].blocks[0].attn.w_msa.rope_freqs)]['weight_decay'] == 0.0


def test_decay_one_is_plain_adamw_lr_and_bad_rate_rejected():
    vit = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), rope='axial')
    wrapper = _build(Detector(vit), decay_rate=1.0)
    assert {g['lr'] for g in wrapper.optimizer.param_groups} == {1.0}
    with pytest.raises(ValueError, match='decay_rate'):
        _build(Detector(vit), decay_rate=1.5)
    with pytest.raises(ValueError, match='unknown paramwise_cfg keys'):
        build_optim_wrapper(Detector(vit), dict(
            optimizer=dict(type='AdamW', lr=1.0), constructor='LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(decay_rat=0.5)))


def test_backbone_without_layer_ids_is_a_clear_error():
    with pytest.raises(ValueError, match='get_layer_id'):
        _build(Detector(nn.Linear(2, 2)))


def test_one_sgd_step_uses_the_decayed_lr():
    torch.manual_seed(0)
    vit = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=2), rope='mixed')
    model = Detector(vit)
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.1), constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(decay_rate=0.5)))
    stem, last = vit.patch_embed.proj.weight, vit.blocks[-1].mlp.fc2.weight
    before = {k: p.detach().clone() for k, p in (('stem', stem), ('last', last))}
    vit(torch.randn(1, 3, 32, 32))[-1].square().mean().backward()
    grads = {'stem': stem.grad.clone(), 'last': last.grad.clone()}
    wrapper.step()
    n = vit.num_layers
    torch.testing.assert_close(stem.detach() - before['stem'], -0.1 * 0.5 ** (n - 1) * grads['stem'])
    torch.testing.assert_close(last.detach() - before['last'], -0.1 * 0.5 ** (n - 1 - vit.depth) * grads['last'])


@pytest.mark.parametrize('optimizer', [dict(type='AdamW', lr=1e-2, weight_decay=0.05),
                                       dict(type='SGD', lr=1e-1, momentum=0.9, weight_decay=0.05)])
def test_shared_vit_rope_freqs_step_like_one_tensor_per_block_with_its_own_lr(optimizer):
    """RoPEViT's rope.freqs [2, depth, nh, P] serves all blocks. Reference: torch's own optimizer on
    one separate tensor per block, each with that block's decayed lr (and no weight decay), under
    the same gradients and an lr schedule that scales every group."""
    torch.manual_seed(0)
    vit = RoPEViT(arch=dict(embed_dims=32, num_heads=2, depth=4), rope='mixed')
    model = Detector(vit)
    rate, n = 0.6, vit.num_layers
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(optimizer), paramwise_cfg=dict(decay_rate=rate),
                                              constructor='LayerDecayOptimWrapperConstructor'))
    freqs = vit.rope.freqs
    refs = [freqs[:, i].detach().clone().requires_grad_() for i in range(vit.depth)]
    ref_cls = getattr(torch.optim, optimizer['type'])
    ref_kwargs = {k: v for k, v in optimizer.items() if k not in ('type', 'lr', 'weight_decay')}
    reference = ref_cls([dict(params=[r], lr=optimizer['lr'] * rate ** (n - 1 - (i + 1))) for i, r in enumerate(refs)],
                        lr=optimizer['lr'], weight_decay=0.0, **ref_kwargs)
    for step in range(4):
        grad = torch.randn_like(freqs)
        for p in model.parameters():
            p.grad = None
        freqs.grad = grad.clone()
        for i, r in enumerate(refs):
            r.grad = grad[:, i].clone()
        wrapper.step()
        reference.step()
        for i, r in enumerate(refs):
            torch.testing.assert_close(freqs[:, i].detach(), r.detach(), rtol=1e-6, atol=1e-7,
                                       msg=f'step {step} block {i}')
        for group in (*wrapper.optimizer.param_groups, *reference.param_groups):   # a schedule: lr x 0.5
            group['lr'] *= 0.5
