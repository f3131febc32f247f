"""Helpers for the BEVFormer tests: a CPU-sized BEVFormer around any zoo
backbone, and batches with a ring of six cameras (model-level tests that do
not need the generated dataset)."""
import copy

import numpy as np
import torch

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]


def tiny_bevformer_cfg(backbone=None, out_indices=(3, ), embed_dims=32, bev=8, num_query=16,
                       levels=1, dropout=0.1, grid_mask=True):
    """A CPU-sized BEVFormer: the zoo's ``arch='test'`` backbone, 1 encoder
    and 2 decoder layers, a ``bev x bev`` grid. ``neck.in_channels`` is
    filled from the backbone."""
    import mmvisbackbones  # noqa: F401
    from mmengine.registry import MODELS as ROOT_MODELS
    bb = dict(type=backbone or 'VMamba', arch='test', out_indices=out_indices)
    if dropout == 0:
        bb['drop_path_rate'] = 0.0     # deterministic training forward
    with torch.device('meta'):
        channels = ROOT_MODELS.build(copy.deepcopy(bb)).out_channels
    return dict(
        type='BEVFormer', use_grid_mask=grid_mask, num_cams=6, backbone=bb,
        neck=dict(type='mmdet.FPN', in_channels=channels, out_channels=embed_dims,
                  num_outs=levels, add_extra_convs='on_output'),
        pts_bbox_head=dict(
            type='BEVFormerHead', bev_h=bev, bev_w=bev, num_query=num_query,
            embed_dims=embed_dims,
            transformer=dict(num_cams=6, num_feature_levels=levels,
                             encoder=dict(num_layers=1, pc_range=PC_RANGE,
                                          layer=dict(num_heads=4, ffn_dims=2 * embed_dims,
                                                     dropout=dropout)),
                             decoder=dict(num_layers=2, layer=dict(
                                 num_heads=4, ffn_dims=2 * embed_dims, dropout=dropout))),
            bbox_coder=dict(post_center_range=[-61.2, -61.2, -10, 61.2, 61.2, 10],
                            max_num=20)),
        train_cfg=dict(pts=dict(assigner=dict(type='HungarianAssigner3D'))))


def build(cfg):
    import mmvisbackbones.detectors.bevformer  # noqa: F401
    from mmdet3d.registry import MODELS
    from mmdet3d.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def ring_lidar2img(h, w, n=6, focal_frac=0.8):
    """Six cameras 60 deg apart looking out horizontally from 1.5 m height."""
    K = np.eye(4)
    K[0, 0] = K[1, 1] = focal_frac * w
    K[0, 2], K[1, 2] = w / 2, h / 2
    mats = []
    for c in range(n):
        a = c * 2 * np.pi / n
        fwd = np.array([np.cos(a), np.sin(a), 0.0])
        right = np.array([np.sin(a), -np.cos(a), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        R = np.stack([right, down, fwd])          # lidar -> camera axes
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = -R @ np.array([0.0, 0.0, 1.5])
        mats.append(K @ T)
    return np.stack(mats)


def frame_meta(h, w, scene='scene-a', prev_exists=True, token='t1', prev='t0', seed=0):
    rng = np.random.default_rng(seed)
    can_bus = rng.normal(size=18)
    return dict(lidar2img=ring_lidar2img(h, w), can_bus=can_bus, img_shape=(h, w),
                scene_token=scene, prev_bev_exists=prev_exists, token=token, prev=prev,
                sample_idx=0)


def make_batch(batch=2, queue=3, h=64, w=96, prev_exists=True, seed=0):
    """Packed-like data for the data preprocessor: images, metas (with
    ``queue_metas``), and two ground-truth boxes per sample."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    samples = []
    for b in range(batch):
        s = Det3DDataSample()
        meta = frame_meta(h, w, prev_exists=prev_exists, seed=seed + b)
        meta['queue_metas'] = [frame_meta(h, w, prev_exists=i > 0, seed=seed + 10 * i + b)
                               for i in range(queue - 1)]
        s.set_metainfo(meta)
        gt = InstanceData()
        gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor(
            [[8.0, 3.0, -1.5, 4.2, 1.9, 1.6, 0.3, 1.0, 0.0],
             [-6.0, 10.0, -1.2, 0.7, 0.7, 1.8, 1.2, 0.0, 0.3]]), box_dim=9)
        gt.labels_3d = torch.tensor([0, 7])
        s.gt_instances_3d = gt
        samples.append(s)
    shape = (queue, 6, 3, h, w) if queue > 1 else (6, 3, h, w)
    imgs = [torch.rand(shape, generator=g) * 255 for _ in range(batch)]
    return dict(inputs=dict(img=imgs), data_samples=samples)
