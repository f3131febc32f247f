"""Multi-view image transforms for BEVFormer (mmdet3d 1.x pipelines)."""
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS

__all__ = ['MultiViewImageScale', 'compose_lidar2img']


def compose_lidar2img(cam2imgs, lidar2cams) -> np.ndarray:
    """``(N, 4, 4)`` float64: each camera's intrinsics (3x3 or 4x4, padded
    to 4x4) times its LiDAR-to-camera transform."""
    mats = []
    for k, l2c in zip(cam2imgs, lidar2cams):
        pad = np.eye(4)
        k = np.asarray(k, dtype=np.float64)
        pad[:k.shape[0], :k.shape[1]] = k
        mats.append(pad @ np.asarray(l2c, dtype=np.float64))
    return np.stack(mats)


@TRANSFORMS.register_module()
class MultiViewImageScale(BaseTransform):
    """Resize every view by ``scale`` and keep the projections consistent
    (upstream BEVFormer's ``RandomScaleImageMultiViewImage`` with one
    scale).

    Required keys: ``img`` (list of (H, W, C) arrays, as
    ``LoadMultiViewImageFromFiles`` gives them) and ``lidar2img`` ((N, 4, 4)
    from ``BEVFormerNuScenesDataset``; computed from ``cam2img`` and
    ``lidar2cam`` when absent).

    Modified keys: ``img`` (each view resized to ``round(H * scale)`` x
    ``round(W * scale)``, bilinear), ``lidar2img`` (left-multiplied by
    ``diag(sx, sy, 1, 1)`` with the exact per-axis factors ``sx = new_W /
    W``, ``sy = new_H / H``), ``cam2img`` (rows 0 and 1 scaled the same way;
    each 3x3 or 4x4, returned as float64 arrays), ``img_shape`` /
    ``pad_shape`` ((new_H, new_W); a list per view when views differ),
    ``scale_factor`` ((w_scale, h_scale), multiplied into an existing one).

    Args:
        scale (float): resize factor, > 0.
        interpolation (str): mmcv interpolation. Defaults to 'bilinear'.
    """

    def __init__(self, scale=0.5, interpolation='bilinear'):
        if not scale > 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        self.scale = float(scale)
        self.interpolation = interpolation

    def transform(self, results):
        imgs = results['img']
        if not isinstance(imgs, (list, tuple)):
            raise TypeError('MultiViewImageScale expects results["img"] as a '
                            'list of views (LoadMultiViewImageFromFiles)')
        if 'lidar2img' in results:
            lidar2img = np.array(results['lidar2img'], dtype=np.float64)
        elif 'cam2img' in results and 'lidar2cam' in results:
            lidar2img = compose_lidar2img(results['cam2img'], results['lidar2cam'])
        else:
            lidar2img = None
        cam2img = results.get('cam2img')
        if cam2img is not None:
            cam2img = [np.array(k, dtype=np.float64) for k in cam2img]
        for key, mats in (('lidar2img', lidar2img), ('cam2img', cam2img)):
            if mats is not None and len(mats) != len(imgs):
                raise ValueError(
                    f'MultiViewImageScale: {len(imgs)} images but {len(mats)}'
                    f' {key} matrices (mmdet3d\'s MultiViewWrapper with '
                    "collected_keys=['img'] appends the processed views "
                    "again; use collected_keys=[])")

        new_imgs, shapes, factors = [], [], []
        for v, img in enumerate(imgs):
            h, w = img.shape[:2]
            nh, nw = int(round(h * self.scale)), int(round(w * self.scale))
            if nh < 1 or nw < 1:
                raise ValueError(f'scale {self.scale} makes a {h}x{w} view '
                                 'empty')
            new_imgs.append(img if (nh, nw) == (h, w) else mmcv.imresize(
                img, (nw, nh), interpolation=self.interpolation))
            sx, sy = nw / float(w), nh / float(h)
            factors.append((sx, sy))
            shapes.append((nh, nw))
            s = np.diag([sx, sy, 1.0, 1.0])
            if lidar2img is not None:
                lidar2img[v] = s @ lidar2img[v]
            if cam2img is not None:
                cam2img[v][0] *= sx
                cam2img[v][1] *= sy

        results['img'] = new_imgs
        if lidar2img is not None:
            results['lidar2img'] = lidar2img
        if cam2img is not None:
            results['cam2img'] = cam2img
        same = all(s == shapes[0] for s in shapes)
        results['img_shape'] = shapes[0] if same else shapes
        results['pad_shape'] = results['img_shape']
        sx, sy = factors[0]
        old = results.get('scale_factor', 1.0)
        if isinstance(old, (int, float)):
            old = (float(old), float(old))
        results['scale_factor'] = (float(old[0]) * sx, float(old[1]) * sy)
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'interpolation={self.interpolation!r})')
