# Mask R-CNN FPN 1x on COCO with Swin-T (mmdet's Swin-T 1x: 42.7 box AP / 39.3 mask AP).
# mmdet's Swin recipe: AdamW lr 1e-4, wd 0.05, no decay on norms and relative
# position bias tables, 1000-iter linear warmup, steps at epochs 8 and 11;
# 16 images per iteration (8 GPUs x 2).
_base_ = '../_base_/mask-rcnn_fpn_adamw-1x_coco.py'

# ImageNet-1k weights released by microsoft/Swin-Transformer
# (https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth);
# download it there, nothing is fetched at run time.  The official file
# (weights under 'model') loads as is: no convert_weights flag needed.
pretrained = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Swin',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

# Swin's relative position bias tables get no weight decay either (mmdet's recipe)
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'relative_position_bias_table': dict(decay_mult=0.)}))
