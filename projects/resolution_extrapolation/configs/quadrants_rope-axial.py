# RoPE-Axial (theta 100) on patch-index coordinates.
_base_ = ['./_base_/quadrants_vit-tiny-p8_fcn1x1-64.py']
model = dict(backbone=dict(rope='axial', use_ape=False))
