# Mask R-CNN FPN 1x on COCO with Vision-RWKV-T and a simple feature pyramid
# (upstream reports 41.7 / 38.0 with its ViT-Adapter variant, mmdet 2.x).
# AdamW lr 1e-4, wd 0.05.
_base_ = '../_base_/mask-rcnn_fpn_adamw-1x_coco.py'

# ImageNet-1k weights released by OpenGVLab/Vision-RWKV (vrwkv_t_in1k_224.pth);
# download it there, nothing is fetched at run time.
pretrained = 'checkpoints/vrwkv_t_in1k_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionRWKV',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 192, 192, 192]))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'ln': dict(decay_mult=0.),
                                    'pos_embed': dict(decay_mult=0.),
                                    'spatial_': dict(decay_mult=0.),
                                    'gamma': dict(decay_mult=0.)}))
