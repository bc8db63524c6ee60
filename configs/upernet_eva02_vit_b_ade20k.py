# UperNet + auxiliary FCN head on EVA-02-B (timm's eva02_base_patch14_224), ADE20k 512x512, 160k
# iterations: the recipe of upernet_rope_vit_b_ade20k.py (blocks 3/5/7/11 resized to strides 4-32,
# AdamW with layer-wise lr decay 0.65) on EVA-02's architecture: SwiGLU MLP with sub-LN, absolute
# position embedding, axial RoPE (theta 1e4) on the pretraining grid's rescale ('interpolate'),
# CLIP pixel statistics.
# Patch 16 as in EVA-02's own segmentation recipe (a 32x32 grid at 512, strides 4-32 from the
# neck): the loader resizes timm's 14x14 patch kernel to 16x16 (pseudo-inverse resize, reported in
# the load log); pretrain_img_size 256 keeps the 16x16 pretraining grid of the position embedding
# and of the RoPE positions.
# Weights: timm's EVA-02-B (.safetensors or .pth), e.g. the file of eva02_base_patch14_224.mim_in22k:
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/eva02_base_patch14_224.mim_in22k.safetensors
_base_ = './upernet_rope_vit_b_ade20k.py'

pretrained = ''
model = dict(
    data_preprocessor=dict(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323]),  # CLIP's, x255
    backbone=dict(
        _delete_=True,
        type='RoPEViT',
        preset='eva02',                 # timm's EVA-02 options (ropevit.models.vit.VIT_PRESETS)
        arch='base',
        patch_size=16,
        pretrain_img_size=256,
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
