"""Box coding, decoding and matching of BEVFormer's head.

Box code (10 dims): ``(cx, cy, log dx, log dy, cz, log dz, sin yaw, cos yaw, vx, vy)``
with ``(cx, cy, cz)`` the box's gravity centre and ``(dx, dy, dz)`` its sizes
along the box axes (mmdet3d 1.x ``LiDARInstance3DBoxes`` order: l, w, h),
all in the LiDAR frame. Upstream (mmdet3d 0.17) coded the same quantities
in its older (w, l, h) order.
"""
from typing import Optional, Sequence

import torch
from mmdet.models.task_modules import AssignResult, BaseAssigner
from mmdet3d.registry import TASK_UTILS
from mmengine.structures import InstanceData

__all__ = ['normalize_bbox', 'denormalize_bbox', 'NMSFreeCoder', 'BBox3DL1Cost',
           'HungarianAssigner3D']


def normalize_bbox(bboxes: torch.Tensor) -> torch.Tensor:
    """``(n, 7|9)`` ``[x, y, z_gravity, dx, dy, dz, yaw, (vx, vy)]`` -> code ``(n, 8|10)``."""
    cx, cy, cz = bboxes[..., 0:1], bboxes[..., 1:2], bboxes[..., 2:3]
    dims = bboxes[..., 3:6].log()
    yaw = bboxes[..., 6:7]
    parts = [cx, cy, dims[..., 0:1], dims[..., 1:2], cz, dims[..., 2:3], yaw.sin(), yaw.cos()]
    if bboxes.shape[-1] > 7:
        parts.append(bboxes[..., 7:9])
    return torch.cat(parts, -1)


def denormalize_bbox(codes: torch.Tensor) -> torch.Tensor:
    """Code ``(n, 8|10)`` -> ``(n, 7|9)`` ``[x, y, z_gravity, dx, dy, dz, yaw, (vx, vy)]``."""
    yaw = torch.atan2(codes[..., 6:7], codes[..., 7:8])
    parts = [codes[..., 0:2], codes[..., 4:5], codes[..., 2:4].exp(), codes[..., 5:6].exp(), yaw]
    if codes.shape[-1] > 8:
        parts.append(codes[..., 8:10])
    return torch.cat(parts, -1)


@TASK_UTILS.register_module()
class NMSFreeCoder:
    """Top-``max_num`` (query, class) pairs by sigmoid score, no NMS.

    Args:
        post_center_range: boxes whose centre lies outside are dropped.
        max_num: detections kept per sample (300).
        score_threshold: optional minimum score.
        num_classes: classes of the classifier.
    """

    def __init__(self, pc_range: Sequence[float] = None,
                 post_center_range: Optional[Sequence[float]] = None, max_num: int = 300,
                 score_threshold: Optional[float] = None, num_classes: int = 10,
                 voxel_size=None):
        self.pc_range = pc_range
        self.post_center_range = post_center_range
        self.max_num, self.score_threshold, self.num_classes = max_num, score_threshold, \
            num_classes

    def decode_single(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor) -> dict:
        """cls_scores ``(nq, num_classes)`` logits; bbox_preds ``(nq, 10)`` codes
        (centres already in metres). Returns ``bboxes (k, 9)`` (gravity
        centre), ``scores (k,)``, ``labels (k,)``."""
        scores = cls_scores.sigmoid().reshape(-1)
        k = min(self.max_num, scores.numel())
        scores, idx = scores.topk(k)
        labels = idx % self.num_classes
        boxes = denormalize_bbox(bbox_preds[idx // self.num_classes])
        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.score_threshold is not None:
            keep &= scores > self.score_threshold
        if self.post_center_range is not None:
            r = boxes.new_tensor(self.post_center_range)
            keep &= ((boxes[:, :3] >= r[:3]) & (boxes[:, :3] <= r[3:])).all(1)
        return dict(bboxes=boxes[keep], scores=scores[keep], labels=labels[keep])


@TASK_UTILS.register_module()
class BBox3DL1Cost:
    """L1 distance between box codes (the first 8 dims: centre, log sizes,
    sin/cos), times ``weight``."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def __call__(self, bbox_pred: torch.Tensor, gt_codes: torch.Tensor) -> torch.Tensor:
        return torch.cdist(bbox_pred, gt_codes, p=1) * self.weight


@TASK_UTILS.register_module()
class HungarianAssigner3D(BaseAssigner):
    """One-to-one matching of queries to ground truth by the Hungarian
    algorithm (scipy) on ``cls_cost`` (mmdet's ``FocalLossCost``, weight 2.0)
    plus ``reg_cost`` (:class:`BBox3DL1Cost` on normalised codes, weight 0.25).

    ``assign`` returns mmdet's ``AssignResult``: ``gt_inds`` is 0 for
    background and ``1 + gt index`` for matched queries."""

    def __init__(self, cls_cost=dict(type='mmdet.FocalLossCost', weight=2.0),
                 reg_cost=dict(type='BBox3DL1Cost', weight=0.25), pc_range=None):
        self.cls_cost = TASK_UTILS.build(cls_cost)
        self.reg_cost = TASK_UTILS.build(reg_cost)
        self.pc_range = pc_range

    def assign(self, bbox_pred: torch.Tensor, cls_pred: torch.Tensor, gt_bboxes: torch.Tensor,
               gt_labels: torch.Tensor) -> AssignResult:
        """bbox_pred ``(nq, 10)`` codes; cls_pred ``(nq, C)`` logits; gt_bboxes
        ``(ng, 9)`` metric boxes with gravity centres; gt_labels ``(ng,)``."""
        from scipy.optimize import linear_sum_assignment
        nq, ng = bbox_pred.shape[0], gt_bboxes.shape[0]
        gt_inds = bbox_pred.new_full((nq, ), -1, dtype=torch.long)
        labels = bbox_pred.new_full((nq, ), -1, dtype=torch.long)
        if ng == 0 or nq == 0:
            gt_inds[:] = 0
            return AssignResult(ng, gt_inds, None, labels=labels)
        cost = self.cls_cost(InstanceData(scores=cls_pred), InstanceData(labels=gt_labels))
        cost = cost + self.reg_cost(bbox_pred[:, :8], normalize_bbox(gt_bboxes)[:, :8])
        cost = torch.nan_to_num(cost.detach(), nan=1e8, posinf=1e8, neginf=-1e8).cpu()
        rows, cols = linear_sum_assignment(cost.numpy())
        rows = torch.as_tensor(rows, device=bbox_pred.device, dtype=torch.long)
        cols = torch.as_tensor(cols, device=bbox_pred.device, dtype=torch.long)
        gt_inds[:] = 0
        gt_inds[rows] = cols + 1
        labels[rows] = gt_labels[cols]
        return AssignResult(ng, gt_inds, None, labels=labels)
