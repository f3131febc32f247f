# CPU demo of the BEV path: BEVFormer with a small VMamba on the generated
# nuScenes-format data (data/demo/nuscenes, v1.0-mini tables and scene names,
# six cameras), evaluated by mmdet3d's NuScenesMetric through the real
# nuscenes-devkit. The upstream tiny recipe (BEV 50x50, images at 0.5x) scaled
# down to CPU size: 2 encoder / 3 decoder layers, 100 queries, width 64, two
# feature levels (strides 8 and 16), a queue of 2 frames, no GridMask (it
# hides a quarter of every image, too much for a 16-epoch schedule), lr 1e-3.
# Run it with `bash tools/run_bev_demo.sh`.
_base_ = ['../bevformer/_base_/bevformer-tiny_nus.py']

data_root = 'data/demo/nuscenes/'
metainfo = dict(classes={{_base_.class_names}}, version='v1.0-mini')
embed_dims = 64
bev_h = bev_w = 50
num_levels = 2
queue_length = 2
img_scale = 0.5
point_cloud_range = {{_base_.point_cloud_range}}

# the tiny recipe's model with CPU-sized settings (losses, matching and the
# box coder stay the recipe's)
model = dict(
    use_grid_mask=False,
    backbone=dict(_delete_=True, type='VMamba',
                  arch=dict(depths=(1, 1, 2, 1), dims=32, ssm_ratio=1.0, d_state=1,
                            mlp_ratio=2.0, drop_path_rate=0.0),
                  out_indices=(1, 2)),
    neck=dict(in_channels=[64, 128], out_channels=embed_dims, num_outs=num_levels),
    pts_bbox_head=dict(
        bev_h=bev_h, bev_w=bev_w, num_query=100, embed_dims=embed_dims,
        transformer=dict(
            num_feature_levels=num_levels,
            encoder=dict(num_layers=2, layer=dict(num_heads=4, ffn_dims=2 * embed_dims,
                                                  dropout=0.0)),
            decoder=dict(num_layers=3, layer=dict(num_heads=4, ffn_dims=2 * embed_dims,
                                                  dropout=0.0))),
        bbox_coder=dict(max_num=100),
        positional_encoding=dict(num_feats=embed_dims // 2, row_num_embed=bev_h,
                                 col_num_embed=bev_w)))

train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True,
         with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes={{_base_.class_names}}),
    dict(type='MultiViewImageScale', scale=img_scale),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'],
         meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                 queue_length=queue_length))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo))       # the recipe's test pipeline
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root,
                     ann_file=data_root + 'nuscenes_infos_temporal_val.pkl')
test_evaluator = val_evaluator

max_epochs = 16
optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(_delete_=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=1e-2, by_epoch=True,
         begin=0, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
