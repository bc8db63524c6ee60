# An mmseg user's config, outside ropevit: mmseg's own UperNet Swin-T (160k, ADE20k 512x512), with
# the backbone swapped for RoPE-Swin. RoPESwin takes mmseg SwinTransformer's keywords (norm_cfg,
# act_cfg, strides, use_abs_pos_embed=False, pretrain_img_size, ...), so the inherited values apply.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)    # 1. register RoPESwin

model = dict(
    backbone=dict(
        type='RoPESwin',                                                     # 2. the swap
        rope='mixed',                                                        # 3. 'mixed' | 'axial' | 'none'
        window_rule='original',          # the window rule the RoPE-Swin ImageNet weights were trained with
        # RoPE-Swin ImageNet-1k weights (naver-ai/rope-vit release); use init_cfg=None for scratch.
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/swin_rope_mixed_tiny_patch4_window7_224.pth')))

# 4. the optimizer: the mmseg Swin recipe's lr, weight decay and custom_keys, unchanged, built by a
# constructor that also exempts RoPE frequencies (which mmseg's keys do not name) from weight decay and
# composes the keys (projects/plugin_example/README.md, "The optimizer").
optim_wrapper = dict(constructor='RoPEOptimWrapperConstructor')
