# BEVFormer-tiny (nuScenes, 24 epochs, 8 GPUs x 1 sample) with PVTv2-B2
# as the image backbone; the recipe is in _base_/bevformer-tiny_nus.py.
_base_ = ['./_base_/bevformer-tiny_nus.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b2',
        out_indices=(3,),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/pvt_v2_b2.pth')),
    neck=dict(in_channels=[512]))
