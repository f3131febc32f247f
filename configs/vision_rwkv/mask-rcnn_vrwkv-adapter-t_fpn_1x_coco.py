# Mask R-CNN FPN 1x on COCO with Vision-RWKV-T and a ViT-Adapter: upstream
# OpenGVLab/Vision-RWKV's recipe (mmdet 2.x; it reports 41.7 box / 38.0 mask AP).
# 8 GPUs x 2 images = total batch 16; AdamW lr 2e-4, wd 0.01, layer-wise lr decay
# 0.85 over the 12 blocks. `--auto-scale-lr` rescales the lr for another total batch.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

# ImageNet-1k weights released by OpenGVLab/Vision-RWKV (vrwkv_t_in1k_224.pth);
# download it there, nothing is fetched at run time.
pretrained = 'checkpoints/vrwkv_t_in1k_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        # upstream's VRWKV_Adapter: the arch holds the plain model's detection /
        # segmentation settings (layer scale 1) and the adapter's (interaction
        # blocks after layers 2, 5, 8, 11; 6 deformable heads, 4 points)
        type='VisionRWKVAdapter',
        arch='tiny',
        norm='syncbn',  # upstream's; 'bn' on one device or a CPU
        out_indices=(0, 1, 2, 3),
        backbone_init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 192, 192, 192]))

train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=0.01),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.85))
auto_scale_lr = dict(enable=False, base_batch_size=16)
