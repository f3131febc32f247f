# UperNet 160k 512x512 ADE20K, Vision-RWKV-S (upstream: 47.2 mIoU).
_base_ = './upernet_vrwkv-t_4xb4-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vrwkv_s_in1k_224.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=384),
    auxiliary_head=dict(in_channels=384))
