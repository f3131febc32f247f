"""BEVFormer's geometry, written from the paper and upstream's documented
behaviour (fundamentalvision/BEVFormer):

* the BEV grid: ``bev_h x bev_w`` cells over ``pc_range`` in the LiDAR frame;
  cell ``(row i, col j)`` is query ``i * bev_w + j``, its centre at LiDAR
  ``x = pc_range[0] + (j + 0.5) * cell_w`` and ``y = pc_range[1] + (i + 0.5) * cell_h``;
* 3-D reference pillars: ``num_points_in_pillar`` heights per cell, evenly
  spread over ``[pc_range[2], pc_range[5]]``, projected into every camera with
  ``lidar2img``; a point counts as a hit of a camera when it lies in front of
  it (depth > ``eps``) and inside that camera's valid (unpadded) image;
* temporal alignment: the previous BEV is rotated by the ego's change of yaw
  about the BEV centre (the LiDAR origin) and sampled at reference points
  shifted by the ego's translation expressed in the current LiDAR axes.

All functions are pure torch and differentiable where it makes sense.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['bev_reference_points_2d', 'bev_reference_points_3d', 'project_reference_points',
           'bev_shift_from_can_bus', 'rotate_bev', 'rotate_center']


def bev_reference_points_2d(bev_h: int, bev_w: int, bs: int, device=None,
                            dtype=torch.float32) -> torch.Tensor:
    """Normalised cell centres, ``(bs, bev_h * bev_w, 1, 2)`` as (x, y) in [0, 1]."""
    ys = (torch.arange(bev_h, device=device, dtype=dtype) + 0.5) / bev_h
    xs = (torch.arange(bev_w, device=device, dtype=dtype) + 0.5) / bev_w
    ref_y, ref_x = torch.meshgrid(ys, xs, indexing='ij')
    ref = torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1)
    return ref[None, :, None, :].expand(bs, -1, -1, -1).contiguous()


def bev_reference_points_3d(bev_h: int, bev_w: int, num_points_in_pillar: int, bs: int,
                            device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised pillar points, ``(bs, num_points_in_pillar, bev_h * bev_w, 3)``
    as (x, y, z) in [0, 1]; the heights are the centres of
    ``num_points_in_pillar`` equal slices of the pillar."""
    ref2d = bev_reference_points_2d(bev_h, bev_w, 1, device, dtype)[0, :, 0]  # (HW, 2)
    zs = (torch.arange(num_points_in_pillar, device=device, dtype=dtype) + 0.5) \
        / num_points_in_pillar
    pts = torch.cat((ref2d[None].expand(num_points_in_pillar, -1, -1),
                     zs[:, None, None].expand(-1, ref2d.shape[0], 1)), -1)
    return pts[None].expand(bs, -1, -1, -1).contiguous()


def project_reference_points(ref_3d: torch.Tensor, pc_range: Sequence[float],
                             lidar2img: torch.Tensor, img_shapes: torch.Tensor,
                             pad_shape: Tuple[int, int], eps: float = 1e-5):
    """Project normalised pillar points into every camera.

    Args:
        ref_3d: ``(bs, D, Q, 3)`` from :func:`bev_reference_points_3d`.
        pc_range: ``[x0, y0, z0, x1, y1, z1]`` in metres (LiDAR frame).
        lidar2img: ``(bs, N, 4, 4)`` projection of each camera (intrinsics
            times LiDAR-to-camera, after any image rescaling).
        img_shapes: ``(bs, N, 2)`` valid (unpadded) ``(h, w)`` of each view.
        pad_shape: ``(H, W)`` of the padded batch the features were computed
            on; sampling locations are normalised by it so that they address
            the feature maps.
    Returns:
        ``ref_cam (N, bs, Q, D, 2)`` normalised (x, y) sampling locations and
        ``mask (N, bs, Q, D)``: the point is in front of the camera and inside
        its valid image.
    """
    pc = ref_3d.new_tensor(pc_range)
    pts = ref_3d * (pc[3:6] - pc[0:3]) + pc[0:3]                     # metres
    pts = torch.cat((pts, torch.ones_like(pts[..., :1])), -1)        # (bs, D, Q, 4)
    l2i = lidar2img.to(pts.dtype)
    cam = torch.einsum('bnij,bdqj->nbqdi', l2i, pts)                # (N, bs, Q, D, 4)
    depth = cam[..., 2:3]
    front = depth > eps
    xy = cam[..., 0:2] / torch.clamp(depth, min=eps)                 # pixels
    hw = img_shapes.to(pts.dtype).permute(1, 0, 2)[:, :, None, None, :]  # (N, bs, 1, 1, 2)
    inside = ((xy[..., 0:1] > 0) & (xy[..., 0:1] < hw[..., 1:2])
              & (xy[..., 1:2] > 0) & (xy[..., 1:2] < hw[..., 0:1]))
    ref_cam = xy / xy.new_tensor([pad_shape[1], pad_shape[0]])
    mask = (front & inside)[..., 0]
    ref_cam = torch.nan_to_num(ref_cam).contiguous()
    return ref_cam, mask


def bev_shift_from_can_bus(can_bus: torch.Tensor, bev_h: int, bev_w: int,
                           real_h: float, real_w: float,
                           lidar_yaw_deg: float = -90.0) -> torch.Tensor:
    """Reference-point shift ``(bs, 2)`` (normalised x, y) for the previous BEV.

    ``can_bus`` holds, per sample, upstream's relative CAN-bus vector: [0:2]
    the ego's translation since the previous frame in the global frame, [-2]
    the current absolute ego yaw (radians). The translation is rotated into
    the current ego frame and then into the LiDAR axes (``lidar_yaw_deg`` is
    the LiDAR's yaw in the ego frame: -90 for nuScenes' LIDAR_TOP, which is
    what upstream's formula assumes), and divided by the BEV extent.
    """
    delta = can_bus[:, 0:2]
    yaw = can_bus[:, -2]
    a = -(yaw + math.radians(lidar_yaw_deg))       # global -> lidar rotation angle
    dx = torch.cos(a) * delta[:, 0] - torch.sin(a) * delta[:, 1]
    dy = torch.sin(a) * delta[:, 0] + torch.cos(a) * delta[:, 1]
    return torch.stack((dx / real_w, dy / real_h), -1)


def rotate_center(bev_h: int, bev_w: int) -> Tuple[float, float]:
    """Rotation centre (x, y) in cell units: the BEV centre, where the LiDAR
    origin is for a symmetric ``pc_range``. Upstream's fixed default
    ``[100, 100]`` is only right for a 200x200 BEV."""
    return bev_w / 2.0, bev_h / 2.0


def rotate_bev(bev: torch.Tensor, angle_deg: torch.Tensor, bev_h: int, bev_w: int,
               center: Tuple[float, float] = None) -> torch.Tensor:
    """Rotate BEV maps about ``center`` (cells) by the yaw change ``angle_deg``.

    ``bev``: ``(bs, bev_h * bev_w, C)``; returns the same shape, with
    ``out(p) = bev(R(angle) (p - c) + c)`` (bilinear, zeros outside): a point
    that lies at ``p`` in the current LiDAR axes lay at ``R(angle) p`` in the
    previous ones, for a yaw change of ``angle``.
    """
    bs, _, C = bev.shape
    if center is None:
        center = rotate_center(bev_h, bev_w)
    img = bev.transpose(1, 2).reshape(bs, C, bev_h, bev_w)
    ang = torch.deg2rad(angle_deg.to(bev.dtype))
    cos, sin = torch.cos(ang), torch.sin(ang)
    # output pixel centres in cell units
    ys = torch.arange(bev_h, device=bev.device, dtype=bev.dtype) + 0.5
    xs = torch.arange(bev_w, device=bev.device, dtype=bev.dtype) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing='ij')
    px, py = gx - center[0], gy - center[1]
    sx = cos[:, None, None] * px - sin[:, None, None] * py + center[0]
    sy = sin[:, None, None] * px + cos[:, None, None] * py + center[1]
    grid = torch.stack((sx / bev_w * 2 - 1, sy / bev_h * 2 - 1), -1)
    out = F.grid_sample(img, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    return out.reshape(bs, C, -1).transpose(1, 2)
