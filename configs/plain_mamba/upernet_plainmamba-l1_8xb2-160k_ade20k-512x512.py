# UperNet 160k, 512x512 crops on ADE20K, PlainMamba-L1: upstream
# ChenhongyiYang/PlainMamba's recipe (mmseg 0.x; the paper reports 44.1 mIoU).
# As upstream, the plain model (no adapter) gives the head four stride-16 maps, the
# token states after layers 5 / 11 / 17 / 23 (`pyramid='none'`), tested on whole images.
# 8 GPUs x 2 images = total batch 16; AdamW lr 6e-5, wd 0.01, no decay on norms,
# embeddings and the SSM parameters; linear warm-up 1500 iterations, then poly.
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
pretrained = 'checkpoints/plainmamba_l1.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PlainMamba',
        arch='l1',
        pyramid='none',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 192, 192, 192]),
    auxiliary_head=dict(in_channels=192, in_index=3),
    test_cfg=dict(mode='whole'))
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.),
        '.pos_embed': dict(decay_mult=0.),
        '.A_log': dict(decay_mult=0.),
        '.D': dict(decay_mult=0.),
        '.direction_Bs': dict(decay_mult=0.),
    }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
