# Test-time augmentation for the detection configs: mmdet's multi-scale + flip recipe
# (mmdet configs/*/..._tta.py). Opt in by adding this file to a config's _base_ and run
# `tools/test.py CONFIG CHECKPOINT --tta` (ropevit.mm.tta.apply_tta).
#
# mmdet 3.3's DetTTAModel merges BOXES only (it asserts that predictions carry no masks). For the
# Mask R-CNN configs, `tta_boxes_only = True` tells apply_tta to leave the mask branch out of the
# test model and report the bbox metric only; mask AP needs a test without --tta.
tta_model = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
tta_boxes_only = True
tta_img_scales = [(1333, 800), (666, 400), (2000, 1200)]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=s, keep_ratio=True) for s in tta_img_scales],
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [dict(type='LoadAnnotations', with_bbox=True)],
            [dict(type='PackDetInputs',
                  meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                             'scale_factor', 'flip', 'flip_direction'))],
        ]),
]
