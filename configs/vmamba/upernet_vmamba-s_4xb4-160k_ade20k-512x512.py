# UperNet 160k 512x512 ADE20K, VMamba-S[s2l15] (upstream: 50.6 mIoU single scale).
_base_ = './upernet_vmamba-t_4xb4-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
