# BEVFormer-tiny (nuScenes, 24 epochs, 8 GPUs x 1 sample) with VMamba-T
# as the image backbone; the recipe is in _base_/bevformer-tiny_nus.py.
_base_ = ['./_base_/bevformer-tiny_nus.py']
