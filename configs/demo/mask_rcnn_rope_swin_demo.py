# The embedded demo: configs/mask_rcnn_rope_swin_t.py (Mask R-CNN + FPN, RoPE-Mixed Swin) shrunk so that
# 2 CPU cores train it in minutes on the generated shapes set (ropevit/data/synthetic_coco.py).
#   python tools/demo.py            (generates data/synthetic_coco on first use, trains, evaluates, draws)
# What changes, and why: a narrower, shallower backbone and thinner heads (CPU budget), 128 px images
# (the set's size), 3 classes, no pretrained weights (none exist at this width), a short schedule with a
# higher lr (from scratch). Detector, RoPE kind, losses, samplers and the metric stay those of the parent.
_base_ = '../mask_rcnn_rope_swin_t.py'

data_root = 'data/synthetic_coco/'
classes = ('circle', 'square', 'triangle')
img_scale = (128, 128)
width = 64

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=4,
                  # From scratch: no checkpoint whose function must be reproduced, so mmdet's default
                  # rule (always shift and pad) is kept, and with it the demo's numbers.
                  drop_path_rate=0.0, window_rule='mmdet', init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width,
                  anchor_generator=dict(scales=[4], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        # A fixed 2x2 sampling grid per RoI bin: adaptive sampling dominated the CPU step time.
        bbox_roi_extractor=dict(out_channels=width, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=width, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(num_convs=2, in_channels=width, conv_out_channels=width, num_classes=len(classes))),
    train_cfg=dict(rpn=dict(sampler=dict(num=128)), rpn_proposal=dict(nms_pre=1000, max_per_img=500),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200), rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 160, 60), (30, 60, 230)])
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                 ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/')))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline,
                 ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.05, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True)]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False, base_batch_size=4)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
