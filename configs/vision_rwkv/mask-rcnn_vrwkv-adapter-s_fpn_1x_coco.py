# Mask R-CNN FPN 1x on COCO with Vision-RWKV-S and a ViT-Adapter: upstream
# OpenGVLab/Vision-RWKV's recipe (mmdet 2.x; it reports 44.8 box / 40.2 mask AP).
# The tiny config with the small plain model: 8 GPUs x 2 images = total batch 16;
# AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.85 over the 12 blocks.
_base_ = './mask-rcnn_vrwkv-adapter-t_fpn_1x_coco.py'

# ImageNet-1k weights released by OpenGVLab/Vision-RWKV (vrwkv_s_in1k_224.pth);
# download it there, nothing is fetched at run time.
pretrained = 'checkpoints/vrwkv_s_in1k_224.pth'
model = dict(
    backbone=dict(arch='small', backbone_init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[384, 384, 384, 384]))
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=0.05))
