# UperNet RoPE-Axial Swin-T (fixed frequencies, theta 50), otherwise as upernet_rope_swin_t_ade20k.py.
_base_ = './upernet_rope_swin_t_ade20k.py'
model = dict(backbone=dict(rope='axial'))
