# NoPE: no position encoding at all (the control).
_base_ = ['./_base_/quadrants_vit-tiny-p8_fcn1x1-64.py']
model = dict(backbone=dict(rope='none', use_ape=False))
