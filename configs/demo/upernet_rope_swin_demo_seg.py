# The segmentation demo: upernet_rope_swin_t_ade20k.py on the generated ADE20k-layout set
# (ropevit.data.synthetic_ade: 96x128 images, 8 of ADE's 150 labels), sized to train on 2 CPU cores in
# minutes. Only what must change for that changes:
#   data root and sizes (96x128 images, 64x64 crops, no photometric jitter: the generated classes differ
#   mainly by colour), a narrower Swin (32 channels, 2 blocks per stage, no ImageNet weights) and heads,
#   BN instead of SyncBN, a from-scratch lr and a short schedule, batch 8, no workers.
#   python tools/demo_seg.py          (generates the data on first use, trains, tests, writes PNGs)
_base_ = '../upernet_rope_swin_t_ade20k.py'

data_root = 'data/synthetic_ade'
crop_size = (64, 64)
image_scale = (128, 96)          # (W, H) of the generated images
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.1,
        # From scratch: no checkpoint whose function must be reproduced, so mmdet's default rule
        # (always shift and pad) is kept, and with it the demo's numbers.
        window_rule='mmdet', init_cfg=None),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, pool_scales=(1, 2, 3), dropout_ratio=0.0,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=32, dropout_ratio=0.0, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole', crop_size=crop_size, stride=(48, 48)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=image_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 500
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
