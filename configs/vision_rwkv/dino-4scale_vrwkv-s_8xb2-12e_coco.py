# DINO 4-scale 12e COCO, Vision-RWKV-S.
_base_ = './dino-4scale_vrwkv-t_8xb2-12e_coco.py'
pretrained = 'checkpoints/vrwkv_s_in1k_224.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 384, 384]))
