"""Shared pieces of get_flops.py and benchmark.py: load a config, build its
whole model (detector / segmentor) in the config's scope without pretrained
weights, and make a batch of images with the data samples mmdet / mmseg
expect (image meta, and ground truth for a training step)."""
import os.path as osp
from typing import List, Optional, Tuple

import torch

#: mmdet's get_flops default (``--shape 1280 800``), as H x W: the landscape
#: orientation of COCO images resized to 1333x800
DET_SHAPE = (800, 1280)
SEG_SHAPE = (512, 512)
SUPPORTED = ('mmdet', 'mmseg')
#: nuScenes' camera images, W x H; a BEV config's ``img_scale`` scales them
NUSCENES_IMG = (1600, 900)


class ConfigError(ValueError):
    """A config these tools cannot use (reported as a usage error)."""


def load_config(path: str, cfg_options: Optional[dict] = None, supported=SUPPORTED):
    """(Config, scope) with the scope's modules registered and made the
    default scope.  ``FileNotFoundError`` / ``ValueError`` with a clear message
    for a missing file or a scope ``supported`` does not name."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmvisbackbones.tools_utils import init_scope
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise ConfigError(f'config {path} has no model')
    scope = cfg.get('default_scope')
    if scope not in supported:
        what = {'mmdet': 'mmdet detectors', 'mmseg': 'mmseg segmentors',
                'mmdet3d': 'mmdet3d BEV detectors'}
        raise ConfigError(f'config {path}: default_scope={scope!r}; this tool handles '
                          + ' and '.join(what[s] for s in supported))
    init_scope(cfg)
    init_default_scope(scope)
    return cfg, scope


def _strip_pretrained(node):
    """Drop every ``init_cfg=dict(type='Pretrained', ...)`` (and mmseg's
    ``pretrained=``): the tools measure random weights, the files need not
    exist."""
    if isinstance(node, dict):
        for k in list(node):
            v = node[k]
            if k == 'init_cfg' and isinstance(v, dict) and v.get('type') == 'Pretrained':
                node[k] = None
            elif k == 'pretrained' and isinstance(v, str):
                node[k] = None
            else:
                _strip_pretrained(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _strip_pretrained(v)


def build_model(cfg, scope: str, device: str = 'cpu') -> torch.nn.Module:
    """The config's whole model on ``device`` ('meta' builds no storage),
    without pretrained weights and without ``init_weights()``."""
    import copy
    model_cfg = copy.deepcopy(cfg.model)
    _strip_pretrained(model_cfg)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmdet3d':
        from mmdet3d.registry import MODELS
    else:
        from mmseg.registry import MODELS
    with torch.device(device):
        model = MODELS.build(model_cfg)
    return model


def default_shape(cfg, scope: str) -> Tuple[Tuple[int, int], str]:
    """(H, W) used when --shape is not given, and where it comes from."""
    if scope == 'mmdet':
        return DET_SHAPE, "mmdet's get_flops default 1280x800 (W x H)"
    if scope == 'mmdet3d':
        s = float(cfg.get('img_scale', 1.0))
        div = int(cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 1))
        h, w = (round(NUSCENES_IMG[1] * s), round(NUSCENES_IMG[0] * s))
        hp, wp = -(-h // div) * div, -(-w // div) * div
        return (hp, wp), (f'nuScenes cameras 1600x900 x img_scale {s:g} = {w}x{h}, padded '
                          f'to a multiple of {div}; 6 cameras')
    size = cfg.model.get('data_preprocessor', {}).get('size') or cfg.get('crop_size')
    if size:
        return (int(size[0]), int(size[1])), "the config's crop size"
    return SEG_SHAPE, 'the mmseg default 512x512'


def data_samples(scope: str, n: int, hw: Tuple[int, int], with_gt: bool = False,
                 num_classes: int = 80, with_mask: bool = False, seed: int = 0) -> List:
    """``n`` DetDataSample / SegDataSample for images of size ``hw`` (already
    at the network's input size: scale factor 1, no padding), with random
    ground truth (3 boxes with masks / a label map) when ``with_gt``."""
    H, W = hw
    g = torch.Generator().manual_seed(seed)
    meta = dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
                batch_input_shape=(H, W), scale_factor=(1.0, 1.0), flip=False,
                flip_direction=None)
    samples = []
    for i in range(n):
        if scope == 'mmdet3d':
            from mmdet3d.structures import Det3DDataSample

            from mmvisbackbones.datasets.nuscenes_demo import static_lidar2img
            s = Det3DDataSample(metainfo=dict(
                meta, lidar2img=static_lidar2img((W, H)), can_bus=[0.0] * 18,
                prev_bev_exists=False, scene_token=f'random_{i}', sample_idx=i))
        elif scope == 'mmdet':
            from mmdet.structures import DetDataSample
            from mmengine.structures import InstanceData
            s = DetDataSample(metainfo=dict(meta, img_id=i, img_path=f'random_{i}.jpg'))
            if with_gt:
                k = 3
                xy = torch.rand(k, 2, generator=g) * torch.tensor([W, H]) * 0.6
                wh = (torch.rand(k, 2, generator=g) * 0.3 + 0.1) * torch.tensor([W, H])
                boxes = torch.cat([xy, xy + wh], 1)
                gt = InstanceData(bboxes=boxes,
                                  labels=torch.randint(0, num_classes, (k, ), generator=g))
                if with_mask:
                    import numpy as np
                    from mmdet.structures.mask import BitmapMasks
                    masks = np.zeros((k, H, W), np.uint8)
                    for j, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
                        masks[j, y0:y1, x0:x1] = 1
                    gt.masks = BitmapMasks(masks, H, W)
                s.gt_instances = gt
        else:
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            s = SegDataSample(metainfo=dict(meta, img_path=f'random_{i}.jpg'))
            if with_gt:
                s.gt_sem_seg = PixelData(
                    data=torch.randint(0, num_classes, (1, H, W), generator=g))
        samples.append(s)
    return samples


def num_classes(cfg, scope: str) -> int:
    """Classes of the config's (first) classification head, for random labels."""
    m = cfg.model
    if scope == 'mmseg':
        return int(m.decode_head.num_classes)
    for path in (('roi_head', 'bbox_head'), ('bbox_head', )):
        node = m
        for k in path:
            node = node.get(k) if node is not None else None
        if isinstance(node, (list, tuple)):
            node = node[-1]
        if node is not None and node.get('num_classes'):
            return int(node['num_classes'])
    return 80


def group_of(name: str) -> str:
    """backbone / neck / heads, from a top-level submodule's name (mmdet3d's
    camera models call them img_backbone / img_neck)."""
    if name in ('backbone', 'img_backbone'):
        return 'backbone'
    if name in ('neck', 'img_neck'):
        return 'neck'
    return 'heads'


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The model's image backbone (``backbone``, or mmdet3d's ``img_backbone``)."""
    return model.backbone if hasattr(model, 'backbone') else model.img_backbone
