# UperNet RoPE-Mixed ViT-S/16 (384 / 12 blocks / 6 heads), ADE20k 512x512, 160k.
# Weights: --cfg-options model.backbone.init_cfg.checkpoint=/path/to/rope_mixed_deit_small_patch16_LS.pth
_base_ = './upernet_rope_vit_b_ade20k.py'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.1),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=384),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
