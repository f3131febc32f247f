# CPU demo / smoke config: DINO 4-scale with a small VMamba (strides 8/16/32
# into ChannelMapper, 4th level by a stride-2 conv) on the generated COCO data.
# One encoder and one decoder layer and 100 queries keep it CPU-sized.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

data_root = 'data/demo/coco/'
classes = ('square', 'circle', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 160, 80), (30, 90, 230)])
img_scale = (128, 128)
model = dict(
    num_queries=100,
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch=dict(depths=(1, 1, 2, 1), dims=32, ssm_ratio=1.0, d_state=1, mlp_ratio=2.0,
                  drop_path_rate=0.0),
        out_indices=(1, 2, 3)),
    neck=dict(in_channels=[64, 128, 256], num_outs=4),
    encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=dict(num_levels=4))),
    decoder=dict(num_layers=1, layer_cfg=dict(cross_attn_cfg=dict(num_levels=4))),
    bbox_head=dict(num_classes=len(classes)),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
    test_cfg=dict(max_per_img=20))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
