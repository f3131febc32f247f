# UperNet, 160k iterations of 512x512 crops on ADE20K (150 classes), AdamW
# lr 6e-5, wd 0.01, poly decay after a 1500-iteration warmup: mmseg's Swin
# UperNet recipe, which upstream VMamba's segmentation configs inherit.  A
# family's config states only its backbone, the heads' in_channels and its
# pretrained file (and what its upstream changes, e.g. Vim's lr).
#
# Batch: 16 images per iteration = 4 GPUs x 4 images (as upstream VMamba ran
# it; mmseg's file says 8 GPUs x 2, the same 16); the lr is for 16.  On another
# number of GPUs, `tools/train.py --auto-scale-lr` scales the lr by
# (GPUs x per-GPU batch) / 16.
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvisbackbones'], allow_failed_imports=False)

model = dict(decode_head=dict(num_classes=150), auxiliary_head=dict(num_classes=150))
train_dataloader = dict(batch_size=4)  # per GPU
auto_scale_lr = dict(enable=False, base_batch_size=16)
