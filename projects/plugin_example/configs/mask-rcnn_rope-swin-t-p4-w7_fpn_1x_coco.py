# An mmdet user's config, outside ropevit: mmdet's own Mask R-CNN Swin-T (1x, COCO), with the
# backbone swapped for RoPE-Swin. Nothing else in the model changes: RoPESwin takes mmdet SwinTransformer's
# keywords (embed_dims, depths, num_heads, window_size, drop_path_rate, out_indices, ...), so the
# inherited values still apply, and its state-dict keys are mmdet's.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

custom_imports = dict(imports=['ropevit.mm'], allow_failed_imports=False)    # 1. register RoPESwin

model = dict(
    backbone=dict(
        type='RoPESwin',                                                     # 2. the swap
        rope='mixed',                                                        # 3. 'mixed' | 'axial' | 'none'
        window_rule='original',          # the window rule the RoPE-Swin ImageNet weights were trained with
        # RoPE-Swin ImageNet-1k weights (naver-ai/rope-vit release, Microsoft Swin layout; converted on load).
        # Download them yourself; without a file here use init_cfg=None to train from scratch.
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/swin_rope_mixed_tiny_patch4_window7_224.pth')))

# 4. the optimizer: the mmdet Swin recipe's lr, weight decay and custom_keys, unchanged, built by a
# constructor that also exempts RoPE frequencies (which mmdet's keys do not name) from weight decay and
# composes the keys (projects/plugin_example/README.md, "The optimizer").
optim_wrapper = dict(constructor='RoPEOptimWrapperConstructor')
