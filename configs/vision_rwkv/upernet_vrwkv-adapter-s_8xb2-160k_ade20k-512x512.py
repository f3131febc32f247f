# UperNet 160k, 512x512 crops on ADE20K, Vision-RWKV-S with a ViT-Adapter: upstream
# OpenGVLab/Vision-RWKV's recipe (mmseg 0.x; it reports 47.2 mIoU, single scale).
# The tiny config with the small plain model: 8 GPUs x 2 images = total batch 16;
# AdamW lr 6e-5, wd 0.01, layer-wise lr decay 0.85.
_base_ = './upernet_vrwkv-adapter-t_8xb2-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vrwkv_s_in1k_224.pth'
model = dict(
    backbone=dict(arch='small', backbone_init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(optimizer=dict(lr=6e-5), paramwise_cfg=dict(layer_decay_rate=0.85))
