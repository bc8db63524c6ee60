# Cascade Mask R-CNN + FPN, RoPE-Mixed Swin-T, COCO 1x.
_base_ = 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py'
# ropevit's modules, and its runtime fixes (ropevit.mm.fixes: checkpoint loading on torch >= 2.6,
# resume past unreadable checkpoints, AMP / DDP on CPUs); docs/RELIABILITY.md
custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # crash-safe checkpoints
custom_hooks = [dict(type='RNGStateHook')]  # exact resume: generator states in checkpoints

pretrained = ''
model = dict(
    backbone=dict(
        _delete_=True, type='RoPESwin', arch='tiny', rope='mixed', window_size=7, drop_path_rate=0.2,
        window_rule='original',  # as the naver RoPE-Swin ImageNet weights were trained (README)
        out_indices=(0, 1, 2, 3), with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='RoPEOptimWrapperConstructor',   # keys compose; position parameters never decayed
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.),
        'rope_freqs': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)]
auto_scale_lr = dict(enable=False, base_batch_size=16)
