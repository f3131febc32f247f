# DINO 4-scale, 12 epochs on COCO, VMamba-T[s1l8] backbone (no upstream figure).
# The strides 8/16/32 outputs feed ChannelMapper, which adds a 4th level by a
# stride-2 conv: num_outs = num_feature_levels = encoder/decoder num_levels = 4.
_base_ = '../_base_/dino-4scale_12e_coco.py'
pretrained = 'checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
