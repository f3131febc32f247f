# UperNet 160k, 512x512 crops on ADE20K, Swin-S (single-scale mIoU: paper 47.6, mmseg 47.72).
_base_ = './upernet_swin-t_4xb4-160k_ade20k-512x512.py'
# https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth
pretrained = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
