# ViTDet-style Mask R-CNN on EVA-02-B (timm's eva02_base_patch14_224): the recipe of
# mask_rcnn_rope_vit_b.py (window 14 with global blocks 2/5/8/11, simple feature pyramid from the
# stride-16 map, LSJ at 1024, AdamW with layer-wise lr decay 0.7) on EVA-02's architecture: SwiGLU
# MLP with sub-LN, absolute position embedding, axial RoPE (theta 1e4) on the pretraining grid's
# rescale ('interpolate'), CLIP pixel statistics.
# Patch 16 as in EVA-02's own detection recipe, so the pyramid has strides 4-64: the loader resizes
# timm's 14x14 patch kernel to 16x16 (pseudo-inverse resize, reported in the load log), and the
# pretraining grid stays 16x16 (pretrain_img_size 256 = 16 patches of 16 px: the position embedding
# loads as it is, and RoPE positions are i * 16 / grid as in pretraining).
# Weights: timm's EVA-02-B (.safetensors or .pth), e.g. the file of eva02_base_patch14_224.mim_in22k:
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/eva02_base_patch14_224.mim_in22k.safetensors
_base_ = './mask_rcnn_rope_vit_b.py'

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
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        out_indices=(11,),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
