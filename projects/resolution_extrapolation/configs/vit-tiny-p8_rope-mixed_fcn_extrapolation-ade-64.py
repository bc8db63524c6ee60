# (c) RoPE-Mixed: learnable mixed-axis frequencies (init theta 10), no APE.
_base_ = ['./_base_/vit-tiny-p8_fcn_extrapolation-ade-64.py']
model = dict(backbone=dict(rope='mixed', use_ape=False))
