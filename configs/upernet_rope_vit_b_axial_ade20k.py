# UperNet RoPE-Axial ViT-B/16 (fixed frequencies, theta 100), otherwise as upernet_rope_vit_b_ade20k.py.
# Weights: --cfg-options model.backbone.init_cfg.checkpoint=/path/to/rope_axial_deit_base_patch16_LS.pth
_base_ = './upernet_rope_vit_b_ade20k.py'
model = dict(backbone=dict(rope='axial'))
