# Mask R-CNN FPN 1x on COCO with Vim-S.
_base_ = './mask-rcnn_vim-t_fpn_1x_coco.py'
pretrained = 'checkpoints/vim_s_midclstok_80p5acc.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 384, 384, 384]))
