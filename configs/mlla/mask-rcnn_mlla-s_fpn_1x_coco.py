# Mask R-CNN FPN 1x on COCO with MLLA-S (upstream: 49.2 box AP / 44.2 mask AP),
# upstream's recipe as in the MLLA-T config (drop path 0.1).
_base_ = './mask-rcnn_mlla-t_fpn_1x_coco.py'
pretrained = 'checkpoints/MLLA_S.pth'  # LeapLabTHU/MLLA README, MLLA-S weights
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
