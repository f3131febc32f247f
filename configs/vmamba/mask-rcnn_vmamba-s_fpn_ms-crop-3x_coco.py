# Mask R-CNN FPN 3x (multi-scale + crop), VMamba-S[s2l15] (upstream: 49.9 / 44.2).
_base_ = './mask-rcnn_vmamba-t_fpn_ms-crop-3x_coco.py'
pretrained = 'checkpoints/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
