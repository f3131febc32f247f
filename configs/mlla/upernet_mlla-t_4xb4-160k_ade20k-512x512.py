# UperNet 160k, 512x512 crops on ADE20K, MLLA-T (no upstream figure; upstream
# reports MLLA-B only: 51.9 mIoU single scale, see upernet_mlla-b_*).
# Upstream's recipe = mmseg's Swin UperNet one (AdamW lr 6e-5, wd 0.01, poly,
# 1500-iter warmup), 16 images per iteration (here 4 GPUs x 4).
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
# ImageNet-1k weights released by LeapLabTHU/MLLA (README, MLLA-T); download it there.
pretrained = 'checkpoints/MLLA_T.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MLLA',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
