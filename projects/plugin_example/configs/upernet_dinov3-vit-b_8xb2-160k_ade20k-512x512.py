# An mmseg user's config, outside ropevit: mmseg's own UperNet ViT-B/16 (MultiLevelNeck, 160k, ADE20k
# 512x512), with the backbone swapped for DINOv3 ViT-B/16 (RoPEViT's 'dinov3' preset: class token +
# 4 registers, normalised axial RoPE, LayerScale), loading timm's DINOv3 weights. The neck and heads
# are mmseg's, unchanged: RoPEViT returns the same [B, 768, H/16, W/16] maps from the same blocks.
_base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)    # 1. register RoPEViT

model = dict(
    pretrained=None,                    # mmseg's model-level ViT weights would go to the backbone instead
    backbone=dict(
        _delete_=True, type='RoPEViT', preset='dinov3', arch='base',         # 2. the swap (mmseg's keywords
        out_indices=(2, 5, 8, 11), drop_path_rate=0.1,                       #    are VisionTransformer's)
        # timm's DINOv3 ViT-B weights (vit_base_patch16_dinov3.lvd1689m); use init_cfg=None for scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vit_base_patch16_dinov3.lvd1689m.safetensors')))

# 3. the optimizer: mmseg's lr, weight decay and custom_keys, unchanged, built by a constructor that also
# exempts the registers and RoPE parameters (which mmseg's keys do not name) from weight decay.
optim_wrapper = dict(constructor='RoPEOptimWrapperConstructor')
