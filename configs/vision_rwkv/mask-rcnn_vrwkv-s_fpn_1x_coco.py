# Mask R-CNN FPN 1x on COCO with Vision-RWKV-S (upstream adapter: 44.8 / 40.2).
_base_ = './mask-rcnn_vrwkv-t_fpn_1x_coco.py'
pretrained = 'checkpoints/vrwkv_s_in1k_224.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 384, 384, 384]))
