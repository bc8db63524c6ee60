# Mask2Former (mmseg's, built from mmdet modules) with a RoPE-Mixed Swin-T, ADE20k 512x512, 160k iterations
# (8 GPUs x 2 images): the detector the RoPE-ViT paper used for Swin on ADE20k.
#   python tools/train.py configs/mask2former_rope_swin_t_ade20k.py
# Weights: --cfg-options model.backbone.init_cfg.checkpoint=/path/to/swin_rope_mixed_tiny_patch4_window7_224.pth
_base_ = [
    '_base_/datasets/ade20k.py', '_base_/default_runtime_seg.py', '_base_/schedules/schedule_160k.py',
]
# mmseg's Mask2FormerHead uses mmdet's pixel decoder, transformer decoder, assigner and losses.
custom_imports = dict(imports=['ropevit.mm', 'ropevit.mm.fixes', 'mmdet.models'], allow_failed_imports=False)

crop_size = (512, 512)
num_classes = 150
pretrained = ''
d = 256                                   # width of the pixel decoder and the transformer decoder
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size, test_cfg=dict(size_divisor=32)),
    backbone=dict(
        type='RoPESwin', arch='tiny', rope='mixed', window_size=7, drop_path_rate=0.3, out_indices=(0, 1, 2, 3),
        window_rule='original', with_cp=False, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='Mask2FormerHead',
        in_channels=[96, 192, 384, 768],
        strides=[4, 8, 16, 32],
        feat_channels=d,
        out_channels=d,
        num_classes=num_classes,
        num_queries=100,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(                 # 6 deformable-attention layers over strides 8, 16, 32
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=d, num_heads=8, num_levels=3, num_points=4, im2col_step=64,
                                       dropout=0.0, batch_first=True, norm_cfg=None, init_cfg=None),
                    ffn_cfg=dict(embed_dims=d, feedforward_channels=1024, num_fcs=2, ffn_drop=0.0,
                                 act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(num_feats=d // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=d // 2, normalize=True),
        transformer_decoder=dict(         # 9 masked-attention decoder layers, 3 rounds over 3 levels
            return_intermediate=True,
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=d, num_heads=8, attn_drop=0.0, proj_drop=0.0, dropout_layer=None,
                                   batch_first=True),
                cross_attn_cfg=dict(embed_dims=d, num_heads=8, attn_drop=0.0, proj_drop=0.0, dropout_layer=None,
                                    batch_first=True),
                ffn_cfg=dict(embed_dims=d, feedforward_channels=2048, num_fcs=2,
                             act_cfg=dict(type='ReLU', inplace=True), ffn_drop=0.0, dropout_layer=None,
                             add_identity=True)),
            init_cfg=None),
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                      class_weight=[1.0] * num_classes + [0.1]),      # the "no object" class weighs 0.1
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                       naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))),
    train_cfg=dict(),
    test_cfg=dict(mode='whole', crop_size=crop_size, stride=(341, 341)))

# Mask2Former's ADE20k recipe: short side 256..1024 (x0.5..2.0 of 512), 512 crops.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomChoiceResize', scales=[int(512 * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=2048),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

# AdamW, backbone at 0.1x lr; no weight decay on norms (every norm layer, backbone included),
# queries, level embeddings, position parameters. RoPEOptimWrapperConstructor composes the keys with
# norm_decay_mult (mmengine's default lets the 'backbone' key switch norm_decay_mult off for the
# backbone: configs/README.md); RoPE frequencies and bias tables keep the backbone's 0.1x lr.
no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='RoPEOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'rope_freqs': no_decay,
            'relative_position_bias_table': no_decay,
            'query_embed': no_decay,
            'query_feat': no_decay,
            'level_embed': no_decay}))
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=160000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=5000)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=5000, save_best='mIoU'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
