# UperNet 160k, 512x512 crops on ADE20K, BiFormer-S (upstream: 49.8 mIoU single scale, 50.8 ms+flip).
# Upstream's recipe (semantic_segmentation/configs/ade20k/upernet.biformer_*.py,
# from UniFormer / CSWin) is mmseg's Swin UperNet one: AdamW lr 6e-5, wd 0.01,
# no decay on norms, poly with 1500-iter linear warmup, 16 images per
# iteration (upstream: 8 GPUs x 2, here 4 x 4); upstream also converts the
# backbone's BatchNorms to SyncBN.
# n_win=8 regions per side: upstream's setting for 512x512 training.
_base_ = '../_base_/upernet_adamw-160k_ade20k-512x512.py'

# ImageNet-1k weights released by rayleizhu/BiFormer (the README's "model" link; upstream's
# loader saves it as biformer_small_in1k.pth); download it there, nothing is fetched at run time.
pretrained = 'checkpoints/biformer_small_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='BiFormer',
        arch='small',
        out_indices=(0, 1, 2, 3),
        n_win=8,
        drop_path_rate=0.3,  # upstream's upernet.biformer_small.py
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
