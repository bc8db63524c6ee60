# DINO-ViTDet (4 scales, 12 epochs) with a RoPE-Mixed ViT-B: the paper's ViT detection setting.
# Window attention (14) with global blocks 2/5/8/11, a simple pyramid at strides 8/16/32/64,
# layer-wise lr decay 0.7.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
# ropevit's modules, and its runtime fixes (ropevit.mm.fixes: checkpoint loading on torch >= 2.6,
# resume past unreadable checkpoints, AMP / DDP on CPUs); docs/RELIABILITY.md
custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # crash-safe checkpoints
custom_hooks = [dict(type='RNGStateHook')]  # exact resume: generator states in checkpoints

pretrained = ''
model = dict(
    backbone=dict(
        _delete_=True, type='RoPEViT', arch='base', rope='mixed', with_cls_token=False, window_size=14,
        global_attn_indexes=(2, 5, 8, 11), out_indices=(11,), drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True, type='SimpleFPN', in_channels=768, out_channels=256, scale_factors=(2.0, 1.0, 0.5),
        num_outs=4, norm_cfg=dict(type='LN2d', eps=1e-6)))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.7))
