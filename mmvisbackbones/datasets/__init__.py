from .demo_data import CLASSES, make_ade_demo, make_coco_demo

__all__ = ['CLASSES', 'make_coco_demo', 'make_ade_demo']
