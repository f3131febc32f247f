# UperNet 160k, 512x512 crops on ADE20K, VMamba-T[s1l8] (upstream: 47.9 mIoU single scale).
# mmseg's Swin-T UperNet recipe (AdamW lr 6e-5, wd 0.01, poly), 16 images per
# iteration; upstream ran it as 4 GPUs x 4 images.
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
