"""The BEVFormer detector on mmdet3d 1.x: data preprocessor for the
``(batch, queue, cameras, C, H, W)`` input, GridMask, the history BEV over the
frame queue (no grad, eval mode, restarted at scene changes) and the
test-time temporal state."""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS
from mmengine.model import BaseDataPreprocessor

__all__ = ['BEVFormer', 'BEVFormerDataPreprocessor', 'GridMask']


@MODELS.register_module()
class BEVFormerDataPreprocessor(BaseDataPreprocessor):
    """Stacks, normalises and pads multi-camera images.

    ``inputs['img']`` per sample: ``(N, 3, H, W)`` (one frame) or
    ``(Q, N, 3, H, W)`` (a training queue, the current frame last); all
    samples of a batch must have the same layout. Returns
    ``inputs['img']`` of shape ``(B, N, 3, H', W')`` or ``(B, Q, N, 3, H', W')``,
    padded at the bottom/right to a multiple of ``pad_size_divisor``, and
    sets ``batch_input_shape`` / ``pad_shape`` in every sample's metainfo
    (and in its ``queue_metas``).
    """

    def __init__(self, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                 bgr_to_rgb=True, pad_size_divisor=32, pad_value=0.0, non_blocking=False):
        super().__init__(non_blocking)
        self.register_buffer('mean', torch.tensor(mean).view(-1, 1, 1), False)
        self.register_buffer('std', torch.tensor(std).view(-1, 1, 1), False)
        self.bgr_to_rgb, self.pad_size_divisor, self.pad_value = bgr_to_rgb, pad_size_divisor, \
            pad_value

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs, samples = data['inputs'], data.get('data_samples')
        if 'img' not in inputs:
            raise KeyError("BEVFormerDataPreprocessor: inputs have no 'img' (pack the images "
                           "with Pack3DDetInputs(keys=['img', ...]))")
        imgs = inputs['img']
        if isinstance(imgs, torch.Tensor):
            imgs = list(imgs)
        dims = {im.dim() for im in imgs}
        if len(dims) != 1 or dims.pop() not in (4, 5):
            raise ValueError('BEVFormerDataPreprocessor: every sample\'s img must be '
                             '(cameras, 3, H, W) or (queue, cameras, 3, H, W), got shapes '
                             f'{[tuple(i.shape) for i in imgs]}')
        if len({tuple(im.shape[:-2]) for im in imgs}) != 1:
            raise ValueError('BEVFormerDataPreprocessor: samples of a batch differ in queue '
                             f'length or camera count: {[tuple(i.shape) for i in imgs]}')
        h = max(im.shape[-2] for im in imgs)
        w = max(im.shape[-1] for im in imgs)
        d = self.pad_size_divisor
        H, W = int(np.ceil(h / d)) * d, int(np.ceil(w / d)) * d
        out = []
        for im in imgs:
            im = im.float()
            if self.bgr_to_rgb:
                im = im.flip(-3)
            im = (im - self.mean) / self.std
            im = F.pad(im, (0, W - im.shape[-1], 0, H - im.shape[-2]), value=self.pad_value)
            out.append(im)
        batch = torch.stack(out)
        if samples is not None:
            for s in samples:
                s.set_metainfo(dict(batch_input_shape=(H, W), pad_shape=(H, W)))
                for m in s.metainfo.get('queue_metas', []) or []:
                    m['batch_input_shape'] = m['pad_shape'] = (H, W)
        return dict(inputs=dict(img=batch), data_samples=samples)


class GridMask(nn.Module):
    """GridMask augmentation as BEVFormer uses it (``use_h``, ``use_w``,
    ``rotate=1`` i.e. no rotation, ``ratio=0.5``, ``mode=1``, ``prob=0.7``):
    with probability ``prob`` one grid of period ``d ~ U[2, h)`` is drawn for
    the whole batch; ``mode=1`` keeps the stripes and zeroes the cells."""

    def __init__(self, use_h=True, use_w=True, ratio=0.5, mode=1, prob=0.7):
        super().__init__()
        self.use_h, self.use_w, self.ratio, self.mode, self.prob = use_h, use_w, ratio, mode, \
            prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or np.random.rand() > self.prob:
            return x
        h, w = x.shape[-2:]
        hh = int(1.5 * max(h, w))
        d = np.random.randint(2, max(h, 3))
        length = min(max(int(d * self.ratio + 0.5), 1), d - 1)
        st_h, st_w = np.random.randint(d), np.random.randint(d)
        keep = np.ones((hh, hh), np.float32)
        for i in range(hh // d):
            if self.use_h:
                s = d * i + st_h
                keep[s:min(s + length, hh), :] = 0
            if self.use_w:
                s = d * i + st_w
                keep[:, s:min(s + length, hh)] = 0
        y0, x0 = (hh - h) // 2, (hh - w) // 2
        keep = keep[y0:y0 + h, x0:x0 + w]
        if self.mode == 1:
            keep = 1 - keep
        return x * x.new_tensor(keep)


def _require_geometry(meta: dict):
    """An error naming the sample and the key when ``lidar2img`` or
    ``can_bus`` is missing from its metainfo."""
    for key in ('lidar2img', 'can_bus'):
        if meta.get(key) is None:
            tok = meta.get('token', meta.get('sample_idx', '?'))
            raise KeyError(f'BEVFormer: sample {tok} has no {key!r} in its metainfo; add it '
                           'to Pack3DDetInputs\' meta_keys and make the infos with '
                           'tools/create_nuscenes_infos.py')


def _meta_geometry(metas: Sequence[dict], num_cams: int, device, pad_shape) -> dict:
    """Stack per-sample lidar2img / image shapes / can_bus into tensors, with
    errors that name what is missing."""
    l2i, shapes, can = [], [], []
    for m in metas:
        _require_geometry(m)
        tok = m.get('token', m.get('sample_idx', '?'))
        mat = np.asarray(m['lidar2img'], dtype=np.float64)
        if mat.shape != (num_cams, 4, 4):
            raise ValueError(f'BEVFormer: sample {tok} has lidar2img of shape {mat.shape}, '
                             f'expected ({num_cams}, 4, 4) for {num_cams} cameras')
        cb = np.asarray(m['can_bus'], dtype=np.float64)
        if cb.shape != (18, ):
            raise ValueError(f'BEVFormer: sample {tok} has can_bus of shape {cb.shape}, '
                             'expected (18,)')
        shp = m.get('img_shape', pad_shape)
        shp = np.asarray(shp, dtype=np.float64)
        if shp.ndim == 1:
            shp = np.tile(shp[None, :2], (num_cams, 1))
        else:
            shp = shp[:, :2]
        l2i.append(mat)
        shapes.append(shp)
        can.append(cb)
    return dict(lidar2img=torch.as_tensor(np.stack(l2i), dtype=torch.float32, device=device),
                img_shapes=torch.as_tensor(np.stack(shapes), dtype=torch.float32,
                                           device=device),
                can_bus=torch.as_tensor(np.stack(can), dtype=torch.float32, device=device),
                pad_shape=tuple(int(v) for v in pad_shape))


@MODELS.register_module()
class BEVFormer(Base3DDetector):
    """BEVFormer: any backbone of the zoo (or mmdet's) -> neck -> BEV encoder
    over the frame queue -> DETR decoder -> 3-D boxes.

    Args:
        backbone: e.g. ``dict(type='VMamba', arch='tiny', out_indices=(3,))``.
        neck: e.g. ``dict(type='mmdet.FPN', in_channels=[768], out_channels=256,
            num_outs=1)``: its outputs are the feature levels of the encoder.
        pts_bbox_head: :class:`BEVFormerHead` config.
        data_preprocessor: :class:`BEVFormerDataPreprocessor` config.
        use_grid_mask: GridMask on the training images (upstream: True).
        video_test_mode: carry the BEV from frame to frame at test time
            (upstream: True); the previous BEV is used only when the
            sample's ``prev`` token is the last frame seen of its scene.
        num_cams: cameras per frame (6).
    """

    def __init__(self, backbone: dict, neck: dict, pts_bbox_head: dict,
                 data_preprocessor: Optional[dict] = None, use_grid_mask: bool = True,
                 video_test_mode: bool = True, num_cams: int = 6, train_cfg=None,
                 test_cfg=None, init_cfg=None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='BEVFormerDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.img_backbone = MODELS.build(backbone)
        self.img_neck = MODELS.build(neck)
        head = dict(pts_bbox_head)
        head.setdefault('train_cfg', train_cfg.get('pts') if train_cfg else None)
        head.setdefault('test_cfg', test_cfg.get('pts') if test_cfg else None)
        self.pts_bbox_head = MODELS.build(head)
        self.num_cams = num_cams
        if self.pts_bbox_head.transformer.num_cams != num_cams:
            raise ValueError(f'BEVFormer: num_cams={num_cams} but the head\'s transformer '
                             f'expects {self.pts_bbox_head.transformer.num_cams}')
        self.grid_mask = GridMask()
        self.use_grid_mask = use_grid_mask
        self.video_test_mode = video_test_mode
        self._history = OrderedDict()     # sample token -> (bev, abs pos, abs angle, scene)
        self._check_neck()

    def _check_neck(self):
        """A neck whose ``in_channels`` do not match the backbone's outputs is
        named here, not as a shape error deep inside a conv."""
        bb_ch = list(getattr(self.img_backbone, 'out_channels', []) or [])
        neck_in = getattr(self.img_neck, 'in_channels', None)
        if bb_ch and neck_in is not None:
            neck_in = [neck_in] if isinstance(neck_in, int) else list(neck_in)
            if neck_in != bb_ch:
                raise ValueError(f'BEVFormer: the neck\'s in_channels {neck_in} do not match '
                                 f'the backbone\'s out_channels {bb_ch} (out_indices '
                                 f'{getattr(self.img_backbone, "out_indices", "?")}); set '
                                 f'neck.in_channels={bb_ch}')
        out = getattr(self.img_neck, 'out_channels', None)
        if out is not None and out != self.pts_bbox_head.embed_dims:
            raise ValueError(f'BEVFormer: neck.out_channels={out} must equal the head\'s '
                             f'embed_dims={self.pts_bbox_head.embed_dims}')

    # ------------------------------------------------------------------ features
    def extract_img_feat(self, img: torch.Tensor) -> List[torch.Tensor]:
        """img ``(B, N, 3, H, W)`` -> ``[(B, N, C, h, w)]`` per neck level."""
        if img.dim() != 5:
            raise ValueError(f'BEVFormer: expected images (B, cameras, 3, H, W), got '
                             f'{tuple(img.shape)}')
        B, N, C, H, W = img.shape
        if N != self.num_cams:
            raise ValueError(f'BEVFormer: got {N} camera images per frame, the model is built '
                             f'for num_cams={self.num_cams}')
        min_size = getattr(self.img_backbone, 'min_input_size', 1)
        if min(H, W) < min_size:
            raise ValueError(f'BEVFormer: camera images of {H}x{W} are smaller than the '
                             f'backbone {type(self.img_backbone).__name__}\'s minimum input '
                             f'size {min_size}')
        x = img.reshape(B * N, C, H, W)
        if self.use_grid_mask:
            x = self.grid_mask(x)
        feats = self.img_backbone(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        feats = self.img_neck(feats)
        return [f.view(B, N, *f.shape[1:]) for f in feats]

    def extract_feat(self, batch_inputs_dict, batch_data_samples=None):
        return self.extract_img_feat(batch_inputs_dict['img'])

    def _geometry(self, metas, pad_shape, device):
        return _meta_geometry(metas, self.num_cams, device, pad_shape)

    def _prev_valid(self, metas, device):
        return torch.tensor([bool(m.get('prev_bev_exists', False)) for m in metas],
                            device=device)

    @torch.no_grad()
    def obtain_history_bev(self, imgs_queue: torch.Tensor, queue_metas: List[List[dict]],
                           pad_shape):
        """BEV of the previous frames, oldest first, in eval mode without
        gradients (as upstream). imgs_queue ``(B, Q-1, N, 3, H, W)``."""
        was_training = self.training
        self.eval()
        try:
            B, Qm1 = imgs_queue.shape[:2]
            feats = self.extract_img_feat(imgs_queue.flatten(0, 1))
            prev_bev = None
            for i in range(Qm1):
                lvl = [f.view(B, Qm1, *f.shape[1:])[:, i] for f in feats]
                metas = [q[i] for q in queue_metas]
                geo = self._geometry(metas, pad_shape, imgs_queue.device)
                valid = self._prev_valid(metas, imgs_queue.device)
                prev_bev = self.pts_bbox_head(lvl, geo, prev_bev, valid, only_bev=True)
        finally:
            self.train(was_training)
        return prev_bev

    # ------------------------------------------------------------------ train
    def loss(self, batch_inputs_dict: dict, batch_data_samples) -> Dict[str, torch.Tensor]:
        img = batch_inputs_dict['img']
        if img.dim() == 5:
            img = img[:, None]
        if img.dim() != 6:
            raise ValueError('BEVFormer.loss: expected images (B, queue, cameras, 3, H, W), '
                             f'got {tuple(img.shape)}')
        metas = [s.metainfo for s in batch_data_samples]
        pad_shape = tuple(img.shape[-2:])
        prev_bev = None
        if img.shape[1] > 1:
            queue_metas = []
            for m in metas:
                q = m.get('queue_metas')
                if q is None or len(q) != img.shape[1] - 1:
                    raise ValueError(f'BEVFormer: a queue of {img.shape[1]} frames needs '
                                     f'{img.shape[1] - 1} queue_metas per sample, got '
                                     f'{None if q is None else len(q)}')
                queue_metas.append(q)
            prev_bev = self.obtain_history_bev(img[:, :-1], queue_metas, pad_shape)
        feats = self.extract_img_feat(img[:, -1])
        geo = self._geometry(metas, pad_shape, img.device)
        outs = self.pts_bbox_head(feats, geo, prev_bev, self._prev_valid(metas, img.device))
        gts = [s.gt_instances_3d for s in batch_data_samples]
        return self.pts_bbox_head.loss_by_feat(outs, gts)

    # ------------------------------------------------------------------ test
    def _temporal_can_bus(self, meta):
        """Relative CAN bus and the previous BEV for one test sample."""
        can_bus = np.array(meta['can_bus'], dtype=np.float64, copy=True)
        pos, angle = can_bus[:3].copy(), float(can_bus[-1])
        prev = None
        if self.video_test_mode:
            prev = self._history.get(meta.get('prev') or None)
            if prev is not None and prev[3] != meta.get('scene_token'):
                prev = None
        if prev is not None:
            can_bus[:3] -= prev[1]
            can_bus[-1] -= prev[2]
        else:
            can_bus[:3] = 0
            can_bus[-1] = 0
        return can_bus, pos, angle, (None if prev is None else prev[0])

    def predict(self, batch_inputs_dict: dict, batch_data_samples, **kwargs):
        img = batch_inputs_dict['img']
        if img.dim() == 6:                 # a queue at test time: use the current frame
            img = img[:, -1]
        metas = [s.metainfo for s in batch_data_samples]
        pad_shape = tuple(img.shape[-2:])
        feats = self.extract_img_feat(img)
        results = []
        # frames of one scene may share a batch: run them in order, each
        # seeing the BEV of the one before
        for b, meta in enumerate(metas):
            _require_geometry(meta)
            can_bus, pos, angle, prev_bev = self._temporal_can_bus(meta)
            geo = self._geometry([dict(meta, can_bus=can_bus)], pad_shape, img.device)
            outs = self.pts_bbox_head([f[b:b + 1] for f in feats], geo, prev_bev)
            results += self.pts_bbox_head.predict_by_feat(outs)
            if self.video_test_mode and meta.get('token') is not None:
                self._history[meta['token']] = (outs['bev_embed'].detach(), pos, angle,
                                                meta.get('scene_token'))
                while len(self._history) > 8:
                    self._history.popitem(last=False)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs_dict, batch_data_samples=None, **kwargs):
        img = batch_inputs_dict['img']
        if img.dim() == 6:
            img = img[:, -1]
        metas = [s.metainfo for s in batch_data_samples]
        feats = self.extract_img_feat(img)
        geo = self._geometry(metas, tuple(img.shape[-2:]), img.device)
        return self.pts_bbox_head(feats, geo)
