# Mask R-CNN FPN 1x on COCO with PVTv2-B1 (upstream: 41.8 box AP / 38.8 mask AP,
# whai362/PVT detection/README.md).
# Optimiser: this project's recipe (upstream Swin/VMamba 1x): AdamW lr 1e-4, wd 0.05,
# no decay on norms, 1000-iter linear warmup, steps at epochs 8 and 11, 16 images per
# iteration (8 GPUs x 2).  whai362/PVT's own 1x configs (mmdet 2.13, on which the
# figure above was obtained) use AdamW lr 2e-4, wd 1e-4 and mmdet's default 500-iter
# warmup; for an exact reproduction set optimizer lr=2e-4, weight_decay=1e-4 and drop
# the paramwise_cfg.
_base_ = '../_base_/mask-rcnn_fpn_adamw-1x_coco.py'

# ImageNet-1k weights released by whai362/PVT (pvt_v2_b1.pth, GitHub release "v2"
# of that repo); download it there, nothing is fetched at run time.
pretrained = 'checkpoints/pvt_v2_b1.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b1',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
