# UperNet 160k, 512x512 crops on ADE20K, Vision-RWKV-T with a ViT-Adapter: upstream
# OpenGVLab/Vision-RWKV's recipe (mmseg 0.x; it reports 43.3 mIoU, single scale).
# 8 GPUs x 2 images = total batch 16; AdamW lr 12e-5, wd 0.01, layer-wise lr decay
# 0.95; linear warm-up 1500 iterations, then poly (the base's schedule). Upstream
# trains in fp16 (`--amp`) and tests by 512x512 windows at stride 341.
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
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
    decode_head=dict(in_channels=[192, 192, 192, 192]),
    auxiliary_head=dict(in_channels=192),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=12e-5, betas=(0.9, 0.999), weight_decay=0.01),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.95))
auto_scale_lr = dict(enable=False, base_batch_size=16)
