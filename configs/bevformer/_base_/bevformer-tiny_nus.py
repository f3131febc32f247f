# BEVFormer-tiny recipe on nuScenes (upstream fundamentalvision/BEVFormer
# bevformer_tiny.py, ported to mmengine / mmdet3d 1.x): BEV 50x50, 3 encoder
# layers, 1 feature level, images at 0.5x, a queue of 3 frames, AdamW 2e-4,
# wd 0.01, backbone lr x0.1, cosine, 24 epochs, grad clip 35.
# Upstream (ResNet-50, nuScenes val): 35.4 NDS / 25.2 mAP.
# The backbone is VMamba-T; the per-backbone configs override it.
_base_ = ['mmdet3d::_base_/default_runtime.py']
custom_imports = dict(imports=['mmvisbackbones', 'mmvisbackbones.detectors.bevformer'],
                      allow_failed_imports=False)

point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
# mmdet3d's NuScenesDataset order (the label indices of the info files)
class_names = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle',
               'motorcycle', 'pedestrian', 'traffic_cone', 'barrier']
metainfo = dict(classes=class_names, version='v1.0-trainval')
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False,
                      use_external=True)
cams = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
        'CAM_BACK_RIGHT']
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

dataset_type = 'BEVFormerNuScenesDataset'
data_root = 'data/nuscenes/'
data_prefix = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                   **{cam: f'samples/{cam}' for cam in cams})
meta_keys = ('sample_idx', 'token', 'scene_token', 'prev', 'frame_idx', 'can_bus',
             'lidar2img', 'cam2img', 'lidar2cam', 'ego2global', 'img_shape', 'ori_shape',
             'pad_shape', 'scale_factor', 'num_views', 'box_type_3d', 'box_mode_3d',
             'cam_names')
train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
    dict(type='MultiViewWrapper', transforms=[dict(type='PhotoMetricDistortion3D')],
         collected_keys=['img'], override_aug_config=False, process_fields=['img']),
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
train_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='nuscenes_infos_temporal_train.pkl', data_prefix=data_prefix,
                 pipeline=train_pipeline, metainfo=metainfo, modality=input_modality,
                 queue_length=queue_length, box_type_3d='LiDAR', test_mode=False,
                 use_valid_flag=True))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='nuscenes_infos_temporal_val.pkl', data_prefix=data_prefix,
                 pipeline=test_pipeline, metainfo=metainfo, modality=input_modality,
                 box_type_3d='LiDAR', test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='NuScenesMetric', data_root=data_root,
                     ann_file=data_root + 'nuscenes_infos_temporal_val.pkl', metric='bbox',
                     modality=input_modality)
test_evaluator = val_evaluator

max_epochs = 24
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(img_backbone=dict(lr_mult=0.1))),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=1e-3, by_epoch=True,
         begin=0, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=8)    # 8 GPUs x 1 sample
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Det3DLocalVisualizer', vis_backends=vis_backends, name='visualizer')
