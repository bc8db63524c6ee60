# UperNet + auxiliary FCN head on DINOv3 ViT-B/16 (timm's vit_base_patch16_dinov3), ADE20k
# 512x512, 160k iterations: the recipe of upernet_rope_vit_b_ade20k.py (blocks 3/5/7/11 resized to
# strides 4-32, AdamW with layer-wise lr decay 0.65) on DINOv3's architecture: class token + 4
# registers, axial RoPE on normalised patch centres (base 100), LayerScale, final LayerNorm (eps 1e-5).
# Weights: timm's DINOv3 ViT-B (.safetensors or .pth), e.g. the file of vit_base_patch16_dinov3.lvd1689m:
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/vit_base_patch16_dinov3.lvd1689m.safetensors
_base_ = './upernet_rope_vit_b_ade20k.py'

pretrained = ''
model = dict(
    backbone=dict(
        _delete_=True,
        type='RoPEViT',
        preset='dinov3',                # timm's DINOv3 options (ropevit.models.vit.VIT_PRESETS)
        arch='base',
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        # DINOv3 pretrained with its coordinates rescaled by up to 2x; to fine-tune the same way, add
        # rope_coords_aug=dict(rescale=2.0) (train time only; timm's model has no augmentation)
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
