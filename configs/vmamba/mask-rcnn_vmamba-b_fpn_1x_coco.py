# Mask R-CNN FPN 1x, VMamba-B[s2l15] (upstream: 49.2 box AP / 44.1 mask AP).
_base_ = './mask-rcnn_vmamba-t_fpn_1x_coco.py'
pretrained = 'checkpoints/vssm_base_0229_ckpt_epoch_237.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
