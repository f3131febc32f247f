# DINO 4-scale, 12 epochs on COCO, Vision-RWKV-T (no upstream figure).  Strides
# 8/16/32 of the simple feature pyramid into ChannelMapper (+1 level).
_base_ = '../_base_/dino-4scale_12e_coco.py'
pretrained = 'checkpoints/vrwkv_t_in1k_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionRWKV',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 192, 192]))
