# DINO 4-scale, 12 epochs on COCO, BiFormer-S backbone (no upstream figure).
# The strides 8/16/32 outputs feed ChannelMapper, which adds a 4th level by a
# stride-2 conv: num_outs = num_feature_levels = encoder/decoder num_levels = 4.
# n_win=16 regions per side: upstream's detection setting.
_base_ = '../_base_/dino-4scale_12e_coco.py'

# ImageNet-1k weights released by rayleizhu/BiFormer (the README's "model" link; upstream's
# loader saves it as biformer_small_in1k.pth); download it there, nothing is fetched at run time.
pretrained = 'checkpoints/biformer_small_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='BiFormer',
        arch='small',
        out_indices=(1, 2, 3),
        n_win=16,
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))
