# DINO 4-scale, 12 epochs on COCO: mmdet's DINO recipe (AdamW lr 1e-4, wd 1e-4,
# backbone lr x0.1, gradient clipping 0.1, lr step at epoch 11).  A family's
# config states only its backbone (out_indices=(1, 2, 3): strides 8/16/32), the
# neck's in_channels and its pretrained file.  ChannelMapper adds the 4th level
# by a stride-2 conv: num_outs = num_feature_levels = the encoder's and
# decoder's num_levels = 4 (else an assert inside deformable attention).
#
# Batch: 16 images per iteration = 8 GPUs x 2 images; lr 1e-4 is for 16.  On
# another number of GPUs, `tools/train.py --auto-scale-lr` scales the lr by
# (GPUs x 2) / 16.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

model = dict(
    num_feature_levels=4,
    neck=dict(num_outs=4),
    encoder=dict(layer_cfg=dict(self_attn_cfg=dict(num_levels=4))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(num_levels=4))))
train_dataloader = dict(batch_size=2)  # per GPU
auto_scale_lr = dict(base_batch_size=16)
