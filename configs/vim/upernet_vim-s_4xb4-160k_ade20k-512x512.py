# UperNet 160k 512x512 ADE20K, Vim-S (paper: 44.9 mIoU, upstream 60k schedule).
_base_ = './upernet_vim-t_4xb4-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vim_s_midclstok_80p5acc.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=384),
    auxiliary_head=dict(in_channels=384))
