# UperNet 160k 512x512 ADE20K, VMamba-B[s2l15] (upstream: 51.0 mIoU single scale).
_base_ = './upernet_vmamba-t_4xb4-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vssm_base_0229_ckpt_epoch_237.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
