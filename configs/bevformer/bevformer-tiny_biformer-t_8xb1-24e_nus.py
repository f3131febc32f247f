# BEVFormer-tiny (nuScenes, 24 epochs, 8 GPUs x 1 sample) with BiFormer-T
# as the image backbone; the recipe is in _base_/bevformer-tiny_nus.py.
_base_ = ['./_base_/bevformer-tiny_nus.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='BiFormer',
        arch='tiny',
        out_indices=(3,),
        n_win=16,  # upstream's detection setting
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_tiny_in1k.pth')),
    neck=dict(in_channels=[512]))
