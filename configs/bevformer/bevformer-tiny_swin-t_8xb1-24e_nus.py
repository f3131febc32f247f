# BEVFormer-tiny (nuScenes, 24 epochs, 8 GPUs x 1 sample) with Swin-T
# as the image backbone; the recipe is in _base_/bevformer-tiny_nus.py.
_base_ = ['./_base_/bevformer-tiny_nus.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='Swin',
        arch='tiny',
        out_indices=(3,),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth')),
    neck=dict(in_channels=[768]))
