# Mask R-CNN FPN 1x on COCO with MLLA-B (upstream: 50.5 box AP / 45.0 mask AP),
# upstream's recipe as in the MLLA-T config.
_base_ = './mask-rcnn_mlla-t_fpn_1x_coco.py'
pretrained = 'checkpoints/MLLA_B.pth'  # LeapLabTHU/MLLA README, MLLA-B weights
model = dict(
    backbone=dict(arch='base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
