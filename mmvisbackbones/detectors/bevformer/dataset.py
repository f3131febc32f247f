"""BEVFormer's temporal nuScenes dataset on mmdet3d 1.x.

``BEVFormerNuScenesDataset`` reads the info files of
``tools/create_nuscenes_infos.py`` (mmdet3d's v2 layout plus
``scene_token`` / ``prev`` / ``next`` / ``frame_idx`` / ``can_bus``) and, in
training, returns a queue of frames as upstream BEVFormer
(fundamentalvision/BEVFormer, ``CustomNuScenesDataset``) does.
"""
import copy
import random

import numpy as np
import torch
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import DATASETS

from .transforms import compose_lidar2img

__all__ = ['BEVFormerNuScenesDataset']

_TEMPORAL_KEYS = ('can_bus', 'scene_token', 'frame_idx', 'prev')
_HOW = ('make the info files with tools/create_nuscenes_infos.py '
        '(mmvisbackbones.datasets.create_nuscenes_infos)')


@DATASETS.register_module()
class BEVFormerNuScenesDataset(NuScenesDataset):
    """nuScenes for BEVFormer: multi-view images, ``lidar2img`` and the
    temporal keys, with a training queue of previous frames.

    Args:
        queue_length (int): frames per training sample, the current one
            included (upstream: 4 for base / small, 3 for tiny).  The
            previous ``queue_length - 1`` frames are drawn as upstream: from
            ``range(idx - queue_length, idx)`` (clamped at 0), shuffled,
            ``queue_length - 1`` of them kept, sorted.
        num_cams (int): cameras every info must have (6 for nuScenes).
        **kwargs: :class:`mmdet3d.datasets.NuScenesDataset`'s arguments
            (``data_root``, ``ann_file``, ``pipeline``, ``data_prefix``,
            ``modality``, ``metainfo`` (give ``version`` there for v1.0-mini:
            mmengine's merge keeps mmdet3d's default 'v1.0-trainval'
            otherwise), ``test_mode``, ``use_valid_flag``, ...).

    Every parsed info gets (on top of NuScenesDataset's keys):

    * ``lidar2img``: float64 ndarray (num_cams, 4, 4), ``pad4(cam2img) @
      lidar2cam`` per camera in the info's camera order,
    * ``cam_names``: list of the camera names in that order,
    * ``can_bus``: float64 ndarray (18,) (absolute; see
      ``mmvisbackbones.datasets.nuscenes_infos``), ``scene_token`` (str),
      ``frame_idx`` (int), ``prev`` (str, '' at a scene start).

    Output of ``__getitem__``:

    * test mode: the pipeline's output for the frame (``inputs['img']``
      (num_cams, 3, H, W)); the data sample's metainfo holds the absolute
      ``can_bus`` and ``scene_token`` (the model tracks the previous frame
      itself at test time).
    * training: ``inputs['img']`` (queue_length, num_cams, 3, H, W), oldest
      frame first; ``data_samples`` is the current frame's
      ``Det3DDataSample`` (its ground truth); its metainfo holds
      ``queue_metas``: the metainfo dicts of the previous frames (oldest
      first, ``queue_length - 1`` of them).  Every frame's metainfo has a
      *relative* ``can_bus`` (float64 (18,): [:3] ego translation minus the
      previous queue frame's, [-1] yaw (deg) minus the previous frame's;
      both 0 where a new scene starts) and ``prev_bev_exists`` (bool: the
      previous queue frame is from the same scene).  The current frame's
      pipeline returning None (e.g. no ground truth left with
      ``filter_empty_gt``) makes mmengine draw another index.
    """

    def __init__(self, *args, queue_length=3, num_cams=6, **kwargs):
        if int(queue_length) < 1:
            raise ValueError(f'queue_length must be >= 1, got {queue_length}')
        self.queue_length = int(queue_length)
        self.num_cams = int(num_cams)
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------
    # info parsing
    # ------------------------------------------------------------------
    def parse_data_info(self, info):
        """NuScenesDataset's parsing, plus ``lidar2img``, ``cam_names`` and
        the temporal keys (see the class docstring).

        Raises:
            ValueError: the info has another number of cameras than
                ``num_cams``, lacks ``cam2img`` / ``lidar2cam`` for a camera,
                or lacks ``can_bus`` / ``scene_token`` (infos not made by
                tools/create_nuscenes_infos.py).
        """
        token = info.get('token', '?')
        missing = [k for k in ('can_bus', 'scene_token') if k not in info]
        if missing:
            raise ValueError(
                f'sample {token}: info has no {missing}; BEVFormer needs the '
                f'temporal infos: {_HOW}')
        images = info.get('images') or {}
        if len(images) != self.num_cams:
            raise ValueError(
                f'sample {token}: info has {len(images)} cameras '
                f'({list(images)}) but num_cams={self.num_cams}')
        for cam, cam_info in images.items():
            lacking = [k for k in ('cam2img', 'lidar2cam')
                       if k not in cam_info]
            if lacking:
                raise ValueError(
                    f'sample {token}: camera {cam} has no {lacking}; {_HOW}')
        cam_names = list(images)
        lidar2img = compose_lidar2img(
            [images[c]['cam2img'] for c in cam_names],
            [images[c]['lidar2cam'] for c in cam_names])
        can_bus = np.asarray(info['can_bus'], dtype=np.float64)
        if can_bus.shape != (18, ):
            raise ValueError(f'sample {token}: can_bus must have 18 values, '
                             f'got shape {can_bus.shape}; {_HOW}')

        data_info = super().parse_data_info(info)
        data_info['lidar2img'] = lidar2img
        data_info['cam_names'] = cam_names
        data_info['can_bus'] = can_bus
        data_info['scene_token'] = info['scene_token']
        data_info['frame_idx'] = int(info.get('frame_idx', 0))
        data_info['prev'] = info.get('prev', '')
        return data_info

    # ------------------------------------------------------------------
    # samples
    # ------------------------------------------------------------------
    def _run_pipeline(self, index):
        """One frame through the pipeline, without the empty-GT filter."""
        input_dict = copy.deepcopy(self.get_data_info(index))
        input_dict['box_type_3d'] = self.box_type_3d
        input_dict['box_mode_3d'] = self.box_mode_3d
        return self.pipeline(input_dict)

    def _temporal_meta(self, index):
        info = self.get_data_info(index)
        return {k: copy.deepcopy(info[k]) for k in _TEMPORAL_KEYS}

    def queue_indices(self, index):
        """Frame indices of the training queue of ``index`` (oldest first,
        ``index`` last), drawn as upstream BEVFormer."""
        candidates = list(range(index - self.queue_length, index))
        random.shuffle(candidates)
        chosen = sorted(candidates[1:])
        return [max(0, i) for i in chosen] + [index]

    def _check_img(self, img):
        if not isinstance(img, torch.Tensor) or img.dim() != 4:
            raise ValueError(
                'BEVFormerNuScenesDataset needs the packed img of each frame '
                'as a (num_cams, 3, H, W) tensor (use '
                "LoadMultiViewImageFromFiles + Pack3DDetInputs(keys=['img', "
                '...])); got ' + (f'shape {tuple(img.shape)}'
                                  if hasattr(img, 'shape')
                                  else type(img).__name__))
        if img.shape[0] != self.num_cams:
            raise ValueError(
                f'the pipeline produced {img.shape[0]} views, expected '
                f'num_cams={self.num_cams} (note: mmdet3d\'s MultiViewWrapper '
                "with collected_keys=['img'] appends every processed view "
                'again; use collected_keys=[] with process_fields=[\'img\'])')

    def prepare_data(self, index):
        if self.test_mode:
            example = super().prepare_data(index)
            if example is not None:
                self._check_img(example['inputs']['img'])
                example['data_samples'].set_metainfo(
                    self._temporal_meta(index))
            return example

        indices = self.queue_indices(index)
        frames = []
        for j, i in enumerate(indices):
            if j == len(indices) - 1:
                # the current frame: NuScenesDataset's behaviour, including
                # the empty-GT filter (None -> mmengine picks another index)
                example = super().prepare_data(i)
            else:
                example = self._run_pipeline(i)
            if example is None:
                return None
            frames.append((i, example))
        return self.union2one(frames)

    def union2one(self, frames):
        """Merge the queue ``[(index, packed example), ...]`` (oldest first)
        into one training sample (see the class docstring)."""
        imgs, metas = [], []
        for i, example in frames:
            img = example['inputs']['img']
            self._check_img(img)
            imgs.append(img)
            meta = example['data_samples'].metainfo
            meta.update(self._temporal_meta(i))
            metas.append(meta)

        prev_scene, prev_pos, prev_angle = None, None, None
        for meta in metas:
            can_bus = np.array(meta['can_bus'], dtype=np.float64)
            pos, angle = can_bus[:3].copy(), float(can_bus[-1])
            if meta['scene_token'] != prev_scene:
                meta['prev_bev_exists'] = False
                can_bus[:3] = 0.0
                can_bus[-1] = 0.0
            else:
                meta['prev_bev_exists'] = True
                can_bus[:3] -= prev_pos
                can_bus[-1] -= prev_angle
            prev_scene, prev_pos, prev_angle = meta['scene_token'], pos, angle
            meta['can_bus'] = can_bus

        data_sample = frames[-1][1]['data_samples']
        current = metas[-1]
        data_sample.set_metainfo(dict(
            can_bus=current['can_bus'],
            prev_bev_exists=current['prev_bev_exists'],
            scene_token=current['scene_token'],
            frame_idx=current['frame_idx'], prev=current['prev'],
            queue_metas=metas[:-1]))
        return dict(inputs=dict(img=torch.stack(imgs)),
                    data_samples=data_sample)
