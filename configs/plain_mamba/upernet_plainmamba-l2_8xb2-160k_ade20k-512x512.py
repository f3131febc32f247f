# UperNet 160k, 512x512 crops on ADE20K, PlainMamba-L2: upstream's recipe (the
# paper reports 46.8 mIoU); as L1 but for the model, its drop path (0.2) and the
# channels. Total batch 16 (8 GPUs x 2).
_base_ = './upernet_plainmamba-l1_8xb2-160k_ade20k-512x512.py'
pretrained = 'checkpoints/plainmamba_l2.pth'
model = dict(
    backbone=dict(arch='l2', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
