# What every BEVFormer recipe here shares (upstream fundamentalvision/BEVFormer,
# ported to mmengine / mmdet3d 1.x): nuScenes data and infos, the NuScenes
# metric, AdamW 2e-4 / wd 0.01 with the backbone at lr x0.1, linear warmup then
# cosine over 24 epochs, grad clip 35, 8 GPUs x 1 sample.
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

dataset_type = 'BEVFormerNuScenesDataset'
data_root = 'data/nuscenes/'
data_prefix = dict(pts='samples/LIDAR_TOP',
                   **{cam: f'samples/{cam}' for cam in cams})
meta_keys = ('sample_idx', 'token', 'scene_token', 'prev', 'frame_idx', 'can_bus',
             'lidar2img', 'cam2img', 'lidar2cam', 'ego2global', 'img_shape', 'ori_shape',
             'pad_shape', 'scale_factor', 'num_views', 'box_type_3d', 'box_mode_3d',
             'cam_names')
train_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='nuscenes_infos_temporal_train.pkl', data_prefix=data_prefix,
                 metainfo=metainfo, modality=input_modality, box_type_3d='LiDAR',
                 test_mode=False, use_valid_flag=True))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='ContiguousSampler'),  # each rank sees consecutive frames
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='nuscenes_infos_temporal_val.pkl', data_prefix=data_prefix,
                 metainfo=metainfo, modality=input_modality, box_type_3d='LiDAR',
                 test_mode=True))
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
