# Mask R-CNN + FPN with a RoPE-Mixed Swin-T backbone, COCO 2017 instance segmentation, 1x schedule.
#   python tools/train.py configs/mask_rcnn_rope_swin_t.py
# Data: data/coco/ in the standard layout (see README). Weights: the original RoPE-Swin-T ImageNet
# checkpoint (naver-ai/rope-vit); set its path below or with
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/swin_rope_mixed_tiny_patch4_window7_224.pth
# Left empty, the backbone trains from scratch (a warning says so).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
# ropevit's modules, and its runtime fixes (ropevit.mm.fixes: checkpoint loading on torch >= 2.6,
# resume past unreadable checkpoints, AMP / DDP on CPUs); docs/RELIABILITY.md
custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))  # crash-safe checkpoints
custom_hooks = [dict(type='RNGStateHook')]  # exact resume: generator states in checkpoints

pretrained = ''
model = dict(
    backbone=dict(
        _delete_=True,
        type='RoPESwin',
        arch='tiny',              # 96 / [2, 2, 6, 2] / [3, 6, 12, 24]
        rope='mixed',             # learnable frequencies per block and head (init theta 10)
        window_size=7,
        window_rule='original',   # as the naver RoPE-Swin ImageNet weights were trained (README)
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

# AdamW as in mmdet's Swin configs; no weight decay on norms, position parameters and RoPE frequencies.
# RoPEOptimWrapperConstructor: keys compose and position parameters are never decayed (configs/README.md).
optim_wrapper = dict(
    constructor='RoPEOptimWrapperConstructor',
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'rope_freqs': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
# 16 images per iteration (8 GPUs x 2) is what the lr is tuned for.
auto_scale_lr = dict(enable=False, base_batch_size=16)
