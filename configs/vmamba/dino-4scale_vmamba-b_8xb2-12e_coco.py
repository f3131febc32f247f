# DINO 4-scale 12e COCO, VMamba-B[s2l15].
_base_ = './dino-4scale_vmamba-t_8xb2-12e_coco.py'
pretrained = 'checkpoints/vssm_base_0229_ckpt_epoch_237.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[256, 512, 1024]))
