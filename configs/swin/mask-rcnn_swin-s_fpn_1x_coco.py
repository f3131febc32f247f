# Mask R-CNN FPN 1x on COCO with Swin-S (no 1x figure upstream; mmdet's Swin-S
# 3x multi-scale: 48.2 box AP / 43.2 mask AP).
_base_ = './mask-rcnn_swin-t_fpn_1x_coco.py'
# https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth
pretrained = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
