# UperNet RoPE-Mixed Swin-S (96 / [2, 2, 18, 2] / [3, 6, 12, 24]), ADE20k 512x512, 160k.
# Weights: --cfg-options model.backbone.init_cfg.checkpoint=/path/to/swin_rope_mixed_small_patch4_window7_224.pth
_base_ = './upernet_rope_swin_t_ade20k.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
