# UperNet 160k, 512x512 crops on ADE20K, Swin-T (single-scale mIoU: mmseg 44.41, paper 44.5).
# mmseg's Swin UperNet recipe (AdamW lr 6e-5, wd 0.01, no decay on norms and
# relative position bias tables, 1500-iter warmup, poly), 16 images per
# iteration: 4 GPUs x 4 images here, 8 x 2 in mmseg.
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
# Official ImageNet-1k release (microsoft/Swin-Transformer,
# https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth);
# mmseg's converted swin_tiny_patch4_window7_224_20220317-1cdeb081.pth loads too.
pretrained = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Swin',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
