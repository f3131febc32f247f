# Mask R-CNN FPN 3x with multi-scale training and crops (mmdet's Swin 3x
# recipe, as upstream VMamba), VMamba-T[s1l8] (upstream: 48.8 box AP / 43.7 mask AP).
_base_ = '../_base_/mask-rcnn_fpn_adamw-ms-crop-3x_coco.py'
pretrained = 'checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
