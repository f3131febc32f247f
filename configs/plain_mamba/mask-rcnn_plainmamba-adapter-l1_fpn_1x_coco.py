# Mask R-CNN FPN 1x on COCO with PlainMamba-L1 and a ViT-Adapter: upstream
# ChenhongyiYang/PlainMamba's recipe (mmdet 2.x; the paper reports 44.1 box / 39.1 mask AP).
# 8 GPUs x 2 images = total batch 16; AdamW lr 1e-4, wd 0.05, no decay on norms,
# biases, embeddings and the SSM parameters; SyncBN in the FPN and the box head.
# `--auto-scale-lr` rescales the lr for another total batch.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

# ImageNet-1k weights released by ChenhongyiYang/PlainMamba (Hugging Face:
# ChenhongyiYang/PlainMamba, l1.pth); download it there, nothing is fetched at run time.
pretrained = 'checkpoints/plainmamba_l1.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ViTAdapter',
        backbone=dict(
            type='PlainMamba',
            arch='l1',
            drop_path_rate=0.1,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        conv_inplane=64,
        n_points=4,
        deform_num_heads=6,
        cffn_ratio=0.25,
        deform_ratio=1.0,
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
        norm='syncbn',  # upstream's; 'bn' on one device or a CPU
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[192, 192, 192, 192], norm_cfg=dict(type='SyncBN', requires_grad=True)),
    roi_head=dict(bbox_head=dict(
        type='Shared4Conv1FCBBoxHead',
        norm_cfg=dict(type='SyncBN', requires_grad=True))))

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'level_embed': dict(decay_mult=0.),
        'pos_embed': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'bias': dict(decay_mult=0.),
        '.A_log': dict(decay_mult=0.),
        '.D': dict(decay_mult=0.),
        '.direction_Bs': dict(decay_mult=0.),
    }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
