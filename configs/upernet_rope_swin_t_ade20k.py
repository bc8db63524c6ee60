# UperNet + auxiliary FCN head, RoPE-Mixed Swin-T, ADE20k 512x512, 160k iterations (8 GPUs x 2 images).
#   python tools/train.py configs/upernet_rope_swin_t_ade20k.py
#   python tools/test.py configs/upernet_rope_swin_t_ade20k.py CKPT [--cfg-options model.test_cfg.mode=slide]
# Data: data/ade/ADEChallengeData2016 (see README). Weights: the RoPE-Mixed Swin-T ImageNet checkpoint
# (naver-ai/rope-vit), set below or with
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/swin_rope_mixed_tiny_patch4_window7_224.pth
# Left empty, the backbone trains from scratch (a warning says so).
_base_ = [
    '_base_/models/upernet_rope_swin.py', '_base_/datasets/ade20k.py',
    '_base_/default_runtime_seg.py', '_base_/schedules/schedule_160k.py',
]
crop_size = (512, 512)
pretrained = ''
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='tiny',               # 96 / [2, 2, 6, 2] / [3, 6, 12, 24]
        rope='mixed',
        window_size=7,
        window_rule='original',    # as the naver RoPE-Swin ImageNet weights were trained (README)
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    # sliding-window inference, used with --cfg-options model.test_cfg.mode=slide
    test_cfg=dict(mode='whole', crop_size=crop_size, stride=(341, 341)))

# AdamW as mmseg's Swin UperNet; no weight decay on norms, position parameters and RoPE frequencies.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='RoPEOptimWrapperConstructor',   # keys compose; position parameters never decayed
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'rope_freqs': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
# 16 images per iteration (8 GPUs x 2) is what the lr is tuned for.
auto_scale_lr = dict(enable=False, base_batch_size=16)
