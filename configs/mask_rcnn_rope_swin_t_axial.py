# Mask R-CNN + FPN with a RoPE-Axial Swin-T backbone (fixed frequencies, theta 50), COCO 1x.
_base_ = './mask_rcnn_rope_swin_t.py'
model = dict(backbone=dict(rope='axial'))
