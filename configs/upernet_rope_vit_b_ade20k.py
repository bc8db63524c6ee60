# UperNet + auxiliary FCN head, RoPE-Mixed ViT-B/16 (DeiT-III), ADE20k 512x512, 160k iterations (8 GPUs x 2).
# A 4-level pyramid from blocks 3/5/7/11 (mmseg's MultiLevelNeck: 4x, 2x, 1x, 0.5x), AdamW with
# layer-wise lr decay 0.65 (BEiT / MAE recipe).
#   python tools/train.py configs/upernet_rope_vit_b_ade20k.py
# Weights: the original RoPE-Mixed ViT-B checkpoint or timm's port of it:
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/rope_mixed_deit_base_patch16_LS.pth
_base_ = [
    '_base_/models/upernet_rope_vit.py', '_base_/datasets/ade20k.py',
    '_base_/default_runtime_seg.py', '_base_/schedules/schedule_160k.py',
]
crop_size = (512, 512)
pretrained = ''
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='base',
        rope='mixed',
        use_ape=False,
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[768, 768, 768, 768], out_channels=768),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150),
    auxiliary_head=dict(in_channels=768, num_classes=150),
    # sliding-window inference, used with --cfg-options model.test_cfg.mode=slide
    test_cfg=dict(mode='whole', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(decay_rate=0.65))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
