# DINO 4-scale 12e COCO, MLLA-S (no upstream figure).
_base_ = './dino-4scale_mlla-t_8xb2-12e_coco.py'
pretrained = 'checkpoints/MLLA_S.pth'  # LeapLabTHU/MLLA README, MLLA-S weights
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))
