# UperNet 160k, 512x512 crops on ADE20K, Vision-RWKV-T (upstream: 43.3 mIoU).
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
pretrained = 'checkpoints/vrwkv_t_in1k_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionRWKV',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=192),
    auxiliary_head=dict(in_channels=192))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.), 'ln': dict(decay_mult=0.),
                                    'pos_embed': dict(decay_mult=0.),
                                    'spatial_': dict(decay_mult=0.),
                                    'gamma': dict(decay_mult=0.)}),
    optimizer=dict(lr=1e-4, weight_decay=0.05))
