# The project's flagship recipe: Mask R-CNN FPN 1x on COCO (data/coco) with
# VMamba-T.  `python tools/train.py configs/vmamba_maskrcnn.py`
_base_ = './vmamba/mask-rcnn_vmamba-t_fpn_1x_coco.py'
