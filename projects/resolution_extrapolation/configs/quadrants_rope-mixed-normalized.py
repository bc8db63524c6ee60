# RoPE-Mixed on normalised patch-centre coordinates (DINOv3), coordinates rescaled by up to 2x in training.
_base_ = ['./_base_/quadrants_vit-tiny-p8_fcn1x1-64.py']
model = dict(backbone=dict(rope='mixed', use_ape=False, rope_coords='normalized', rope_coords_aug=dict(rescale=2.0)))
