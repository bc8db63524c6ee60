# DINO (4 scales, 12 epochs) with a RoPE-Mixed Swin-T backbone: the paper's Swin detection setting.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
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
        out_indices=(1, 2, 3), with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
# Backbone at 0.1x lr (mmdet's DINO); no weight decay on norms (every norm layer, by type), relative
# position bias tables and RoPE frequencies, which keep the backbone's lr. RoPEOptimWrapperConstructor
# composes the keys (mmengine's default applies only the longest matching one: configs/README.md).
optim_wrapper = dict(
    constructor='RoPEOptimWrapperConstructor',
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={'backbone': dict(lr_mult=0.1), 'relative_position_bias_table': dict(decay_mult=0.),
                     'rope_freqs': dict(decay_mult=0.)}))
