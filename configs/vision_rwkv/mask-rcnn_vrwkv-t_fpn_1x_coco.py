# Mask R-CNN FPN 1x on COCO with Vision-RWKV-T and a simple feature pyramid
# (upstream reports 41.7 / 38.0 with its ViT-Adapter variant, mmdet 2.x).
# AdamW lr 1e-4, wd 0.05.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

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

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'ln': dict(decay_mult=0.),
                                    'pos_embed': dict(decay_mult=0.),
                                    'spatial_': dict(decay_mult=0.),
                                    'gamma': dict(decay_mult=0.)}),
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999),
                   weight_decay=0.05))
