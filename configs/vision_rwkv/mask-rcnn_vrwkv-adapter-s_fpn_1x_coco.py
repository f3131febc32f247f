# Mask R-CNN FPN 1x on COCO with Vision-RWKV-S and a ViT-Adapter: upstream
# OpenGVLab/Vision-RWKV's recipe (mmdet 2.x; it reports 44.8 box / 40.2 mask AP).
# 8 GPUs x 2 images = total batch 16; AdamW lr 1e-4, wd 0.05, layer-wise lr decay
# 0.85 over the 12 blocks. `--auto-scale-lr` rescales the lr for another total batch.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

# ImageNet-1k weights released by OpenGVLab/Vision-RWKV (vrwkv_s_in1k_224.pth);
# download it there, nothing is fetched at run time.
pretrained = 'checkpoints/vrwkv_s_in1k_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ViTAdapter',
        backbone=dict(
            type='VisionRWKV',
            # upstream's detection / segmentation settings of the plain model
            arch=dict(embed_dims=384, depth=12, post_norm=True, init_values=1e-05,
                      key_norm=False, drop_path_rate=0.2),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        conv_inplane=64,
        n_points=4,
        deform_num_heads=6,
        cffn_ratio=0.25,
        deform_ratio=1.0,
        interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]],
        norm='syncbn',  # upstream's; 'bn' on one device or a CPU
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[384, 384, 384, 384]))

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.85))
auto_scale_lr = dict(enable=False, base_batch_size=16)
