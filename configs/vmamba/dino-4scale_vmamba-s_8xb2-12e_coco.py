# DINO 4-scale 12e COCO, VMamba-S[s2l15].
_base_ = './dino-4scale_vmamba-t_8xb2-12e_coco.py'
pretrained = 'checkpoints/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
