# BEVFormer-tiny recipe on nuScenes: BEV 50x50, 3 encoder layers, 1 feature level (stride 32),
# images at 0.5x, a queue of 3 frames.
# Upstream (nuScenes val, ResNet-50): 35.4 NDS / 25.2 mAP.
# The backbone here is VMamba-T; the per-backbone configs replace it.
_base_ = ['./bevformer_nus_common.py']

point_cloud_range = {{_base_.point_cloud_range}}
class_names = {{_base_.class_names}}
meta_keys = {{_base_.meta_keys}}
embed_dims = 256
ffn_dims = embed_dims * 2
bev_h = bev_w = 50
num_levels = 1
queue_length = 3
img_scale = 0.5

model = dict(
    type='BEVFormer',
    use_grid_mask=True,
    video_test_mode=True,
    num_cams=6,
    data_preprocessor=dict(type='BEVFormerDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='VMamba', arch='tiny', out_indices=(3, ), drop_path_rate=0.2,
                  frozen_stages=-1,
                  init_cfg=dict(type='Pretrained',
                                checkpoint='checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth')),
    neck=dict(type='mmdet.FPN', in_channels=[768], out_channels=embed_dims, start_level=0,
              add_extra_convs='on_output', num_outs=num_levels, relu_before_extra_convs=True),
    pts_bbox_head=dict(
        type='BEVFormerHead',
        bev_h=bev_h, bev_w=bev_w, num_query=900, num_classes=10, embed_dims=embed_dims,
        code_size=10, code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2],
        transformer=dict(
            num_cams=6, num_feature_levels=num_levels, rotate_prev_bev=True, use_shift=True,
            use_can_bus=True, use_cams_embeds=True,
            encoder=dict(num_layers=3, pc_range=point_cloud_range, num_points_in_pillar=4,
                         layer=dict(num_heads=8, tsa_points=4, sca_points=8,
                                    ffn_dims=ffn_dims, dropout=0.1)),
            decoder=dict(num_layers=6, layer=dict(num_heads=8, num_points=4,
                                                  ffn_dims=ffn_dims, dropout=0.1))),
        bbox_coder=dict(type='NMSFreeCoder',
                        post_center_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
                        max_num=300, num_classes=10),
        positional_encoding=dict(type='mmdet.LearnedPositionalEncoding',
                                 num_feats=embed_dims // 2, row_num_embed=bev_h,
                                 col_num_embed=bev_w),
        loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=2.0),
        loss_bbox=dict(type='mmdet.L1Loss', loss_weight=0.25)),
    train_cfg=dict(pts=dict(assigner=dict(
        type='HungarianAssigner3D',
        cls_cost=dict(type='mmdet.FocalLossCost', weight=2.0),
        reg_cost=dict(type='BBox3DL1Cost', weight=0.25)))))

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
