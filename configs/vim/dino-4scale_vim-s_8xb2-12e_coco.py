# DINO 4-scale 12e COCO, Vim-S.
_base_ = './dino-4scale_vim-t_8xb2-12e_coco.py'
pretrained = 'checkpoints/vim_s_midclstok_80p5acc.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 384, 384]))
