# Mask R-CNN FPN, 3x schedule (36 epochs) with multi-scale training and crops,
# AdamW: mmdet's Swin 3x recipe (as upstream VMamba's 3x configs), inherited as
# is.  A family's config states only its backbone, the neck's in_channels and
# its pretrained file.
#
# Batch: 16 images per iteration = 8 GPUs x 2 images; lr 1e-4 is for 16.  On
# another number of GPUs, `tools/train.py --auto-scale-lr` scales the lr by
# (GPUs x 2) / 16.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

train_dataloader = dict(batch_size=2)  # per GPU
auto_scale_lr = dict(enable=False, base_batch_size=16)
