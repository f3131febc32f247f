"""BEVFormer's detection head: BEV queries with a learned positional
encoding, the perception transformer, per-decoder-layer classification and
regression branches (box refinement), Hungarian matching, focal + L1 losses
on every decoder layer, and the NMS-free decoding."""
import copy
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import Linear
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.models.utils import multi_apply
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS, TASK_UTILS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData

from .coder import normalize_bbox
from .transformer import PerceptionTransformer

__all__ = ['BEVFormerHead']


@MODELS.register_module()
class BEVFormerHead(BaseModule):
    """Args:
        num_classes: 10 for nuScenes.
        embed_dims: transformer width (256).
        num_query: object queries (900).
        bev_h, bev_w: BEV grid (50 tiny, 150 small, 200 base).
        transformer: kwargs of :class:`PerceptionTransformer`.
        num_reg_fcs: hidden layers of each branch (2).
        code_size / code_weights: box code (10) and its L1 weights
            (``[1] * 8 + [0.2, 0.2]``).
        bbox_coder: ``NMSFreeCoder`` config.
        positional_encoding: mmdet's ``LearnedPositionalEncoding`` config.
        loss_cls / loss_bbox: mmdet's ``FocalLoss`` (2.0) / ``L1Loss`` (0.25).
        train_cfg: ``dict(assigner=dict(type='HungarianAssigner3D', ...))``.
    """

    def __init__(self, num_classes=10, embed_dims=256, num_query=900, bev_h=50, bev_w=50,
                 transformer=None, num_reg_fcs=2, code_size=10,
                 code_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2),
                 bbox_coder=None, positional_encoding=None,
                 loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                               loss_weight=2.0),
                 loss_bbox=dict(type='mmdet.L1Loss', loss_weight=0.25),
                 train_cfg=None, test_cfg=None, init_cfg=None):
        super().__init__(init_cfg)
        self.num_classes, self.embed_dims, self.num_query = num_classes, embed_dims, num_query
        self.bev_h, self.bev_w = bev_h, bev_w
        self.code_size = code_size
        if len(code_weights) != code_size:
            raise ValueError(f'BEVFormerHead: code_weights has {len(code_weights)} entries, '
                             f'code_size is {code_size}')
        self.register_buffer('code_weights', torch.tensor(code_weights), persistent=False)
        self.transformer = PerceptionTransformer(embed_dims=embed_dims, **(transformer or {}))
        self.pc_range = self.transformer.pc_range
        coder = dict(type='NMSFreeCoder', pc_range=self.pc_range, num_classes=num_classes)
        coder.update(bbox_coder or {})
        self.bbox_coder = TASK_UTILS.build(coder)
        pe = dict(type='mmdet.LearnedPositionalEncoding', num_feats=embed_dims // 2,
                  row_num_embed=bev_h, col_num_embed=bev_w)
        pe.update(positional_encoding or {})
        self.positional_encoding = MODELS.build(pe)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        if not getattr(self.loss_cls, 'use_sigmoid', False):
            raise ValueError('BEVFormerHead needs a sigmoid classification loss '
                             '(FocalLoss with use_sigmoid=True)')
        self.train_cfg, self.test_cfg = train_cfg, test_cfg
        self.assigner = None
        if train_cfg is not None:
            self.assigner = TASK_UTILS.build(train_cfg['assigner'])

        # box refinement: one pair of branches per decoder layer
        num_pred = len(self.transformer.decoder.layers)
        cls_branch = []
        for _ in range(num_reg_fcs):
            cls_branch += [Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims),
                           nn.ReLU(inplace=True)]
        cls_branch.append(Linear(embed_dims, num_classes))
        reg_branch = []
        for _ in range(num_reg_fcs):
            reg_branch += [Linear(embed_dims, embed_dims), nn.ReLU()]
        reg_branch.append(Linear(embed_dims, code_size))
        self.cls_branches = nn.ModuleList(copy.deepcopy(nn.Sequential(*cls_branch))
                                          for _ in range(num_pred))
        self.reg_branches = nn.ModuleList(copy.deepcopy(nn.Sequential(*reg_branch))
                                          for _ in range(num_pred))
        self.bev_embedding = nn.Embedding(bev_h * bev_w, embed_dims)
        self.query_embedding = nn.Embedding(num_query, embed_dims * 2)

    def init_weights(self):
        super().init_weights()           # the transformer's init_weights included
        bias = bias_init_with_prob(0.01)
        for m in self.cls_branches:
            nn.init.constant_(m[-1].bias, bias)

    # ------------------------------------------------------------------ forward
    def bev_pos(self, bs, device, dtype):
        mask = torch.zeros((bs, self.bev_h, self.bev_w), device=device, dtype=dtype)
        return self.positional_encoding(mask).to(dtype)

    def forward(self, mlvl_feats: List[torch.Tensor], geometry: dict,
                prev_bev: Optional[torch.Tensor] = None,
                prev_valid: Optional[torch.Tensor] = None, only_bev: bool = False):
        """mlvl_feats ``[(bs, N, C, h, w)]``; geometry: ``can_bus (bs, 18)``,
        ``lidar2img (bs, N, 4, 4)``, ``img_shapes (bs, N, 2)``, ``pad_shape (H, W)``.

        Returns the BEV ``(bs, Q, C)`` when ``only_bev``, else a dict with
        ``bev_embed``, ``all_cls_scores (L, bs, nq, classes)`` and
        ``all_bbox_preds (L, bs, nq, 10)`` (centres in metres)."""
        bs, dt, dev = mlvl_feats[0].shape[0], mlvl_feats[0].dtype, mlvl_feats[0].device
        bev = self.transformer.get_bev_features(
            mlvl_feats, self.bev_embedding.weight, self.bev_h, self.bev_w,
            self.bev_pos(bs, dev, dt), geometry['can_bus'], geometry['lidar2img'],
            geometry['img_shapes'], geometry['pad_shape'], prev_bev, prev_valid)
        if only_bev:
            return bev
        states, init_ref, refs = self.transformer.decode(
            bev, self.query_embedding.weight, self.bev_h, self.bev_w, self.reg_branches)
        pc = self.pc_range
        cls_scores, bbox_preds = [], []
        for lvl in range(states.shape[0]):
            reference = inverse_sigmoid(init_ref if lvl == 0 else refs[lvl - 1])
            cls = self.cls_branches[lvl](states[lvl])
            tmp = self.reg_branches[lvl](states[lvl])
            xy = (tmp[..., 0:2] + reference[..., 0:2]).sigmoid()
            z = (tmp[..., 4:5] + reference[..., 2:3]).sigmoid()
            x = xy[..., 0:1] * (pc[3] - pc[0]) + pc[0]
            y = xy[..., 1:2] * (pc[4] - pc[1]) + pc[1]
            z = z * (pc[5] - pc[2]) + pc[2]
            box = torch.cat((x, y, tmp[..., 2:4], z, tmp[..., 5:]), -1)
            cls_scores.append(cls)
            bbox_preds.append(box)
        return dict(bev_embed=bev, all_cls_scores=torch.stack(cls_scores),
                    all_bbox_preds=torch.stack(bbox_preds))

    # ------------------------------------------------------------------ targets
    @staticmethod
    def gt_to_tensor(boxes: LiDARInstance3DBoxes) -> torch.Tensor:
        """mmdet3d boxes (bottom centre) -> ``(n, 9)`` with gravity centres."""
        t = boxes.tensor
        if t.shape[-1] < 9:
            raise ValueError('BEVFormerHead needs ground-truth velocities (9-dim boxes): set '
                             'with_velocity=True in the dataset')
        return torch.cat((boxes.gravity_center, t[:, 3:9]), 1)

    def _targets_single(self, cls_score, bbox_pred, gt_boxes, gt_labels):
        nq = bbox_pred.shape[0]
        res = self.assigner.assign(bbox_pred, cls_score, gt_boxes, gt_labels)
        pos = torch.nonzero(res.gt_inds > 0, as_tuple=False).squeeze(-1)
        neg = torch.nonzero(res.gt_inds == 0, as_tuple=False).squeeze(-1)
        labels = gt_boxes.new_full((nq, ), self.num_classes, dtype=torch.long)
        label_weights = gt_boxes.new_ones(nq)
        bbox_targets = torch.zeros_like(bbox_pred)[..., :gt_boxes.shape[-1]]
        bbox_weights = torch.zeros_like(bbox_pred)
        if pos.numel():
            matched = res.gt_inds[pos] - 1
            labels[pos] = gt_labels[matched]
            bbox_targets[pos] = gt_boxes[matched]
            bbox_weights[pos] = 1.0
        return labels, label_weights, bbox_targets, bbox_weights, pos.numel(), neg.numel()

    def loss_single(self, cls_scores, bbox_preds, gt_boxes_list, gt_labels_list):
        """Losses of one decoder layer; cls_scores ``(bs, nq, C)``."""
        (labels, label_weights, bbox_targets, bbox_weights, num_pos, _) = multi_apply(
            self._targets_single, list(cls_scores.detach()), list(bbox_preds.detach()),
            gt_boxes_list, gt_labels_list)
        labels = torch.cat(labels)
        label_weights = torch.cat(label_weights)
        bbox_targets = torch.cat(bbox_targets)
        bbox_weights = torch.cat(bbox_weights)
        cls_scores = cls_scores.reshape(-1, self.num_classes)
        avg = cls_scores.new_tensor([float(sum(num_pos))])
        avg = torch.clamp(reduce_mean(avg), min=1).item()
        loss_cls = self.loss_cls(cls_scores, labels, label_weights, avg_factor=avg)
        bbox_preds = bbox_preds.reshape(-1, bbox_preds.shape[-1])
        targets = normalize_bbox(bbox_targets) if bbox_targets.shape[0] else bbox_targets
        finite = torch.isfinite(targets).all(-1)
        weights = bbox_weights * self.code_weights
        loss_bbox = self.loss_bbox(bbox_preds[finite, :self.code_size],
                                   targets[finite, :self.code_size],
                                   weights[finite, :self.code_size], avg_factor=avg)
        return torch.nan_to_num(loss_cls), torch.nan_to_num(loss_bbox)

    def loss_by_feat(self, outs: dict, gt_instances: Sequence[InstanceData]) -> Dict:
        if self.assigner is None:
            raise RuntimeError('BEVFormerHead.loss needs train_cfg with an assigner')
        dev = outs['all_cls_scores'].device
        boxes = [self.gt_to_tensor(g.bboxes_3d).to(dev) for g in gt_instances]
        labels = [g.labels_3d.to(dev) for g in gt_instances]
        all_cls, all_box = outs['all_cls_scores'], outs['all_bbox_preds']
        losses = {}
        n = all_cls.shape[0]
        for i in range(n):
            lc, lb = self.loss_single(all_cls[i], all_box[i], boxes, labels)
            prefix = '' if i == n - 1 else f'd{i}.'
            losses[f'{prefix}loss_cls'] = lc
            losses[f'{prefix}loss_bbox'] = lb
        return losses

    # ------------------------------------------------------------------ predict
    def predict_by_feat(self, outs: dict) -> List[InstanceData]:
        cls, box = outs['all_cls_scores'][-1], outs['all_bbox_preds'][-1]
        results = []
        for b in range(cls.shape[0]):
            dec = self.bbox_coder.decode_single(cls[b], box[b])
            bboxes = dec['bboxes'].clone()
            bboxes[:, 2] = bboxes[:, 2] - bboxes[:, 5] * 0.5        # gravity -> bottom
            results.append(InstanceData(
                bboxes_3d=LiDARInstance3DBoxes(bboxes, box_dim=bboxes.shape[-1]),
                scores_3d=dec['scores'], labels_3d=dec['labels']))
        return results
