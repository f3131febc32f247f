# Mask R-CNN FPN 1x on COCO with BiFormer-T (no upstream figure for BiFormer-T).
# Recipe of upstream's object_detection/configs/coco/maskrcnn.1x.biformer_small.py
# (UniFormer's): AdamW lr 1e-4, wd 0.05, no decay on norms, 500-iter linear
# warmup, steps at epochs 8 and 11, 16 images per iteration (8 GPUs x 2);
# upstream trained with torch AMP (add --amp to tools/train.py).
# n_win=16 regions per side: upstream's detection setting (1333x800 inputs).
_base_ = '../_base_/mask-rcnn_fpn_adamw-1x_coco.py'

# ImageNet-1k weights released by rayleizhu/BiFormer (the README's "model" link; upstream's
# loader saves it as biformer_tiny_in1k.pth); download it there, nothing is fetched at run time.
pretrained = 'checkpoints/biformer_tiny_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='BiFormer',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        n_win=16,
        drop_path_rate=0.1,  # upstream has no BiFormer-T detection config; 0.1 is our choice
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))

# upstream's 500-iteration warmup (the base warms up for 1000)
max_epochs = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
