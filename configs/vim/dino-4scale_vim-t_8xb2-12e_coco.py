# DINO 4-scale, 12 epochs on COCO, Vim-Ti (no upstream figure).  Strides
# 8/16/32 of the simple feature pyramid into ChannelMapper, which adds the 4th
# level: num_outs = num_feature_levels = encoder/decoder num_levels = 4.
_base_ = '../_base_/dino-4scale_12e_coco.py'
pretrained = 'checkpoints/vim_t_midclstok_76p1acc.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 192, 192]))
