# UperNet 160k, 512x512 crops on ADE20K, Vision-RWKV-S with a ViT-Adapter: upstream
# OpenGVLab/Vision-RWKV's recipe (mmseg 0.x; it reports 47.2 mIoU, single scale).
# 8 GPUs x 2 images = total batch 16; AdamW lr 6e-5, wd 0.01, layer-wise lr decay
# 0.85; linear warm-up 1500 iterations, then poly (the base's schedule). Upstream
# trains in fp16 (`--amp`) and tests by 512x512 windows at stride 341.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)
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
    decode_head=dict(in_channels=[384, 384, 384, 384], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.85))
auto_scale_lr = dict(enable=False, base_batch_size=16)
