# Mask R-CNN FPN 1x on COCO with Vim-Ti (no published Vim Mask R-CNN figure;
# the paper reports Cascade Mask R-CNN ViTDet-style Ti 45.7 / 39.2).
# Strides 4/8/16/32 come from a simple feature pyramid over four evenly spaced
# layers; every level has embed_dims channels.  AdamW lr 1e-4, wd 0.05.
_base_ = '../_base_/mask-rcnn_fpn_adamw-1x_coco.py'

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

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}))
