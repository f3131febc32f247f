# DINO 4-scale, 12 epochs on COCO, Vision-RWKV-T (no upstream figure).  Strides
# 8/16/32 of the simple feature pyramid into ChannelMapper (+1 level).
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)
pretrained = 'checkpoints/vrwkv_t_in1k_224.pth'
model = dict(
    num_feature_levels=4,
    backbone=dict(
        _delete_=True,
        type='VisionRWKV',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 192, 192], num_outs=4),
    encoder=dict(layer_cfg=dict(self_attn_cfg=dict(num_levels=4))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(num_levels=4))))
