# (a) APE only: learned absolute position embedding (8x8 grid, bicubic-resized at other sizes), no RoPE.
_base_ = ['./_base_/vit-tiny-p8_fcn_extrapolation-ade-64.py']
model = dict(backbone=dict(rope='none', use_ape=True))
