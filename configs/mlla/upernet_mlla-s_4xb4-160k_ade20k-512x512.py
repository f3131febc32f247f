# UperNet 160k 512x512 ADE20K, MLLA-S (no upstream figure).
_base_ = './upernet_mlla-t_4xb4-160k_ade20k-512x512.py'
pretrained = 'checkpoints/MLLA_S.pth'  # LeapLabTHU/MLLA README, MLLA-S weights
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
