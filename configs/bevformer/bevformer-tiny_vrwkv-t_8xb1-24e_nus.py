# BEVFormer-tiny (nuScenes, 24 epochs, 8 GPUs x 1 sample) with VisionRWKV-T
# as the image backbone; the recipe is in _base_/bevformer-tiny_nus.py.
_base_ = ['./_base_/bevformer-tiny_nus.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionRWKV',
        arch='tiny',
        out_indices=(3,),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vrwkv_t_in1k_224.pth')),
    neck=dict(in_channels=[192]))
