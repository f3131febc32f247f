# Mask R-CNN FPN 1x on COCO with PlainMamba-L2 and a ViT-Adapter: upstream's
# recipe (the paper reports 46.0 box / 40.6 mask AP); as L1 but for the model,
# its drop path (0.2) and the channels. Total batch 16 (8 GPUs x 2).
_base_ = './mask-rcnn_plainmamba-adapter-l1_fpn_1x_coco.py'
pretrained = 'checkpoints/plainmamba_l2.pth'
model = dict(
    backbone=dict(backbone=dict(
        arch='l2', drop_path_rate=0.2, init_cfg=dict(type='Pretrained', checkpoint=pretrained))),
    neck=dict(in_channels=[384, 384, 384, 384]))
