# DINO 4-scale, 12 epochs on COCO, PVTv2-B1 backbone (no upstream figure).
# The strides 8/16/32 outputs feed ChannelMapper, which adds a 4th level by a
# stride-2 conv: num_outs = num_feature_levels = encoder/decoder num_levels = 4.
# Stage 0 (stride 4) is still computed (it feeds stage 1) but not returned.
_base_ = '../_base_/dino-4scale_12e_coco.py'
# ImageNet-1k weights released by whai362/PVT (pvt_v2_b1.pth, GitHub release "v2"
# of that repo); download it there, nothing is fetched at run time.
pretrained = 'checkpoints/pvt_v2_b1.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b1',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 320, 512]))
