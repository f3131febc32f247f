from .demo_data import CLASSES, make_ade_demo, make_coco_demo
from .nuscenes_demo import make_nuscenes_demo
from .nuscenes_infos import create_nuscenes_infos

__all__ = ['CLASSES', 'make_coco_demo', 'make_ade_demo', 'make_nuscenes_demo',
           'create_nuscenes_infos']
