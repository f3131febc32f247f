# DINO 4-scale, 12 epochs on COCO, Swin-T backbone (no upstream figure; mmdet
# only releases DINO with Swin-L 5-scale).  Strides 8/16/32 feed ChannelMapper,
# which adds a 4th level by a stride-2 conv:
# num_outs = num_feature_levels = encoder/decoder num_levels = 4.
_base_ = '../_base_/dino-4scale_12e_coco.py'
# https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth
pretrained = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Swin',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
# DINO's AdamW (lr 1e-4, wd 1e-4, backbone lr x0.1, as mmdet's DINO Swin-L) with
# Swin's no decay on the relative position bias tables.  mmengine picks the
# longest matching custom key, so the table key repeats the backbone lr_mult.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.1),
        'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.)
    }))
