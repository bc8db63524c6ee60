# RoPE-Mixed + APE.
_base_ = ['./_base_/quadrants_vit-tiny-p8_fcn1x1-64.py']
model = dict(backbone=dict(rope='mixed', use_ape=True))
