# The study's shared recipe (projects/resolution_extrapolation/README.md). A tiny RoPEViT (patch 8,
# 64 px scenes, 8x8 tokens) and an FCN head of ONE 1x1 conv, so the head mixes no tokens: what a pixel
# knows about where it is comes from the backbone's position encoding alone. Trained at ONE fixed
# resolution (64x64) on the quadrant scenes of make_data.py (a square's class is its quadrant relative
# to the anchor). No flips: a flip would change every square's class.
# The study's configs change only backbone.rope / use_ape / rope_coords / rope_coords_aug.
default_scope = 'mmseg'
# ropevit's modules, and its runtime fixes (ropevit.mm.fixes: checkpoint loading on torch >= 2.6,
# resume past unreadable checkpoints, AMP / DDP on CPUs); docs/RELIABILITY.md
custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes'], allow_failed_imports=False)
custom_hooks = [dict(type='RNGStateHook')]  # exact resume: generator states in checkpoints

crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                           size=crop_size),
    backbone=dict(
        type='RoPEViT',
        arch=dict(embed_dims=64, num_heads=2, depth=4),  # head dim 32, mlp_ratio 4 (default)
        patch_size=8,
        pretrain_img_size=64,         # the APE grid (8x8); bicubic-resized at other sizes
        rope='mixed',                 # the arms set rope, use_ape, rope_coords, rope_coords_aug
        use_ape=False,
        rope_coords='index',
        with_cls_token=False,
        layer_scale_init_value=None,  # from scratch, short schedule
        out_indices=(3,),
        init_cfg=None),
    decode_head=dict(
        type='FCNHead', in_channels=64, in_index=0, channels=64, num_convs=1, kernel_size=1,
        concat_input=False, dropout_ratio=0.0, num_classes=5, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# mmseg's BaseSegDataset with ADE20k's conventions (.jpg / .png, label 0 ignored) and the study's classes
dataset_type = 'BaseSegDataset'
metainfo = dict(classes=('anchor', 'above-left', 'above-right', 'below-left', 'below-right'),
                palette=[[200, 40, 40], [0, 200, 0], [0, 0, 200], [200, 200, 0], [0, 200, 200]])
data_root = 'data/extrapolation_quadrants'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),   # the sweep multiplies this scale
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
                 seg_map_suffix='.png', reduce_zero_label=True,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
                 seg_map_suffix='.png', reduce_zero_label=True,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 600
# AdamW on everything but the position encodings the study compares: RoPEOptimWrapperConstructor
# exempts RoPE frequencies and the APE from weight decay.
optim_wrapper = dict(type='OptimWrapper', constructor='RoPEOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
