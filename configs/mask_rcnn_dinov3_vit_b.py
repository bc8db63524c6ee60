# ViTDet-style Mask R-CNN on DINOv3 ViT-B/16 (timm's vit_base_patch16_dinov3): the recipe of
# mask_rcnn_rope_vit_b.py (window 14 with global blocks 2/5/8/11, simple feature pyramid from the
# stride-16 map, LSJ at 1024, AdamW with layer-wise lr decay 0.7) on DINOv3's architecture:
# class token + 4 registers (never windowed: every window attends with them), axial RoPE on
# normalised patch centres (base 100), LayerScale, final LayerNorm (eps 1e-5).
# Weights: timm's DINOv3 ViT-B (.safetensors or .pth), e.g. the file of vit_base_patch16_dinov3.lvd1689m:
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/vit_base_patch16_dinov3.lvd1689m.safetensors
_base_ = './mask_rcnn_rope_vit_b.py'

pretrained = ''
model = dict(
    backbone=dict(
        _delete_=True,
        type='RoPEViT',
        preset='dinov3',                # timm's DINOv3 options (ropevit.models.vit.VIT_PRESETS)
        arch='base',
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        out_indices=(11,),
        drop_path_rate=0.1,
        # DINOv3 pretrained with its coordinates rescaled by up to 2x; to fine-tune the same way, add
        # rope_coords_aug=dict(rescale=2.0) (train time only; timm's model has no augmentation)
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
