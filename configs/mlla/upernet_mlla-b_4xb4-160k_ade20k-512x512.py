# UperNet 160k 512x512 ADE20K, MLLA-B (upstream: 51.9 mIoU single scale, 52.5 multi
# scale; downstream/segmentation/configs/mlla/mlla_b_upernet.py, drop path 0.5).
_base_ = './upernet_mlla-t_4xb4-160k_ade20k-512x512.py'
pretrained = 'checkpoints/MLLA_B.pth'  # LeapLabTHU/MLLA README, MLLA-B weights
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
