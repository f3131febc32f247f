# BEVFormer-base recipe on nuScenes: BEV 200x200, 6 encoder layers, 4 feature levels (strides
# 8/16/32 and one extra), images at 1.0x, a queue of 4 frames.
# Upstream (nuScenes val, ResNet-101-DCN): 51.7 NDS / 41.6 mAP.
# The backbone here is VMamba-T; the per-backbone configs replace it.
# Everything not set here is the tiny recipe (./bevformer-tiny_nus.py).
_base_ = ['./bevformer-tiny_nus.py']

point_cloud_range = {{_base_.point_cloud_range}}
class_names = {{_base_.class_names}}
meta_keys = {{_base_.meta_keys}}
bev_h = bev_w = 200
num_levels = 4
queue_length = 4
img_scale = 1.0

model = dict(
    backbone=dict(out_indices=(1, 2, 3)),
    neck=dict(in_channels=[192, 384, 768], num_outs=num_levels),
    pts_bbox_head=dict(
        bev_h=bev_h, bev_w=bev_w,
        transformer=dict(num_feature_levels=num_levels, encoder=dict(num_layers=6)),
        positional_encoding=dict(row_num_embed=bev_h, col_num_embed=bev_w)))

train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
    dict(type='MultiViewWrapper', transforms=[dict(type='PhotoMetricDistortion3D')],
         collected_keys=[], override_aug_config=False, process_fields=['img']),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True,
         with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='MultiViewImageScale', scale=img_scale),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'],
         meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
    dict(type='MultiViewImageScale', scale=img_scale),
    dict(type='Pack3DDetInputs', keys=['img'], meta_keys=meta_keys),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, queue_length=queue_length))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
