# BEVFormer-tiny (nuScenes, 24 epochs, 8 GPUs x 1 sample) with MLLA-T
# as the image backbone; the recipe is in _base_/bevformer-tiny_nus.py.
_base_ = ['./_base_/bevformer-tiny_nus.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='MLLA',
        arch='tiny',
        out_indices=(3,),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_T.pth')),
    neck=dict(in_channels=[512]))
