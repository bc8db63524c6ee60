# UperNet + auxiliary FCN head on a RoPE-Mixed ViT-B/16: blocks 3/5/7/11 (stride 16) are resized to
# strides 4/8/16/32 by mmseg's MultiLevelNeck (4x, 2x, 1x, 0.5x), as in mmseg's ViT/DeiT UperNet.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='RoPEViT',
        arch='base',
        patch_size=16,
        pretrain_img_size=224,
        rope='mixed',
        use_ape=False,
        with_cls_token=True,
        out_indices=(3, 5, 7, 11),
        final_norm=True,
        drop_path_rate=0.1,
        layer_scale_init_value=1e-5,
        with_cp=False),
    neck=dict(type='MultiLevelNeck', in_channels=[768, 768, 768, 768], out_channels=768, scales=[4, 2, 1, 0.5]),
    decode_head=dict(
        type='UPerHead',
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=768,
        in_index=3,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
