# UperNet RoPE-Mixed Swin-B (128 / [2, 2, 18, 2] / [4, 8, 16, 32]), ADE20k 512x512, 160k.
# Weights: --cfg-options model.backbone.init_cfg.checkpoint=/path/to/swin_rope_mixed_base_patch4_window7_224.pth
_base_ = './upernet_rope_swin_t_ade20k.py'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
