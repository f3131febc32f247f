# UperNet 160k, 512x512 crops on ADE20K, Vim-Ti (paper: 41.0 mIoU, trained
# 60k iterations with layer-wise lr decay in upstream's mmseg 0.x code).
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vim_t_midclstok_76p1acc.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=192),
    auxiliary_head=dict(in_channels=192))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'pos_embed': dict(decay_mult=0.)}),
    optimizer=dict(lr=1e-4, weight_decay=0.05))
