# (b) RoPE-Axial: fixed axial frequencies (theta 100), no APE.
_base_ = ['./_base_/vit-tiny-p8_fcn_extrapolation-ade-64.py']
model = dict(backbone=dict(rope='axial', use_ape=False))
