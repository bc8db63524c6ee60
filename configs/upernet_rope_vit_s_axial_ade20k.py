# UperNet RoPE-Axial ViT-S/16 (fixed frequencies, theta 100), otherwise as upernet_rope_vit_s_ade20k.py.
_base_ = './upernet_rope_vit_s_ade20k.py'
model = dict(backbone=dict(rope='axial'))
