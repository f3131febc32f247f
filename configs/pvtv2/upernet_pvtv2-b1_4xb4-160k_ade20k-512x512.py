# UperNet 160k, 512x512 crops on ADE20K, PVTv2-B1 (no upstream UperNet figure:
# PVTv2's own segmentation results use Semantic FPN, see whai362/PVTv2-Seg).
# mmseg's Swin-T UperNet recipe (AdamW lr 6e-5, wd 0.01, poly), 16 images per
# iteration (4 GPUs x 4 images).
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'
# ImageNet-1k weights released by whai362/PVT (pvt_v2_b1.pth, GitHub release "v2"
# of that repo); download it there, nothing is fetched at run time.
pretrained = 'checkpoints/pvt_v2_b1.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b1',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
