# Mask R-CNN FPN 1x on COCO with MLLA-T (upstream: 46.8 box AP / 42.1 mask AP).
# Upstream's recipe (LeapLabTHU/MLLA downstream/detection/configs/mlla/mlla_t_mrcnn_1x.py):
# mmdet's Swin multi-scale + crop augmentation (DETR-style) for 12 epochs, AdamW
# lr 1e-4, wd 0.05, no decay on norms, 1000-iter linear warmup, steps at epochs 8
# and 11, drop path 0.1; 16 images per iteration (8 GPUs x 2).
_base_ = '../_base_/mask-rcnn_fpn_adamw-ms-crop-3x_coco.py'

# ImageNet-1k weights released by LeapLabTHU/MLLA (README "Pretrained Models",
# MLLA-T TsinghuaCloud link; upstream's configs call the file MLLA_T.pth);
# download it there, nothing is fetched at run time.
pretrained = 'checkpoints/MLLA_T.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MLLA',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))

# the 3x base's pipeline, on the 1x schedule
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
