# Mask R-CNN FPN 1x on COCO with VMamba-T[s1l8] (upstream: 47.3 box AP / 42.7 mask AP).
# Recipe of the upstream VMamba detection configs (inherited from mmdet's Swin-T
# 1x): AdamW lr 1e-4, wd 0.05, no decay on norms, 1000-iter linear warmup,
# steps at epochs 8 and 11; 16 images per iteration (8 GPUs x 2).
_base_ = '../_base_/mask-rcnn_fpn_adamw-1x_coco.py'

# ImageNet-1k weights released by MzeroMiko/VMamba (vssm1_tiny_0230s_ckpt_epoch_264.pth);
# download it there, nothing is fetched at run time.
pretrained = 'checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
