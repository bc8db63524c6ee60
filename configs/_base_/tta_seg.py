# Test-time augmentation for the segmentation configs: mmseg's multi-scale + flip recipe
# (the one mmseg's ADE20k/UperNet configs use). Opt in by adding this file to a config's _base_:
#
#   _base_ = ['_base_/<seg model/data/schedule bases>.py', '_base_/tta_seg.py']
#
# and run `tools/test.py CONFIG CHECKPOINT --tta` (ropevit.mm.tta.apply_tta). SegTTAModel averages
# the softmax of every view, each resized back to the original image and un-flipped, and takes the
# argmax. Scales are ratios of the ORIGINAL image size (not of the test pipeline's Resize), as in
# mmseg. To change them, override `tta_pipeline` in your config (editing `tta_img_ratios` there
# alone does not rebuild the list below).
tta_model = dict(type='SegTTAModel')
tta_img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in tta_img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            # after Resize: the ground truth stays at the original size; reduce_zero_label
            # follows the data set (ADE20KDataset: True)
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
