# Mask R-CNN FPN, 1x schedule (12 epochs), AdamW: mmdet's Swin 1x recipe, which
# upstream VMamba's detection configs inherit (families whose upstream differs,
# e.g. BiFormer's 500-iteration warmup, say so in their own config).
# A family's config inherits this file and states only its backbone, the neck's
# in_channels, its pretrained file and its own no-decay keys.
#
# Batch: 16 images per iteration = 8 GPUs x 2 images; lr 1e-4 is for 16.  On
# another number of GPUs, `tools/train.py --auto-scale-lr` scales the lr by
# (GPUs x 2) / 16.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

train_dataloader = dict(batch_size=2)  # per GPU
auto_scale_lr = dict(enable=False, base_batch_size=16)

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
# no weight decay on norms; families add their own keys (position embeddings,
# relative position bias tables, ...) to custom_keys, which merges with this one
optim_wrapper = dict(
    type='OptimWrapper',
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999),
                   weight_decay=0.05))
