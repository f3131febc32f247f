# DINO 4-scale, 12 epochs on COCO, MLLA-T backbone (no upstream figure).
# The strides 8/16/32 outputs feed ChannelMapper, which adds a 4th level by a
# stride-2 conv: num_outs = num_feature_levels = encoder/decoder num_levels = 4.
_base_ = '../_base_/dino-4scale_12e_coco.py'
# ImageNet-1k weights released by LeapLabTHU/MLLA (README, MLLA-T); download it there.
pretrained = 'checkpoints/MLLA_T.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MLLA',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))
