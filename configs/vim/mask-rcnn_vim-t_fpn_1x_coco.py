# Mask R-CNN FPN 1x on COCO with Vim-Ti (no published Vim Mask R-CNN figure;
# the paper reports Cascade Mask R-CNN ViTDet-style Ti 45.7 / 39.2).
# Strides 4/8/16/32 come from a simple feature pyramid over four evenly spaced
# layers; every level has embed_dims channels.  AdamW lr 1e-4, wd 0.05.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

# ImageNet-1k weights released by hustvl/Vim (Hugging Face hustvl/Vim-tiny-midclstok);
# download it there, nothing is fetched at run time.
pretrained = 'checkpoints/vim_t_midclstok_76p1acc.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
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
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'pos_embed': dict(decay_mult=0.)}),
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999),
                   weight_decay=0.05))
