"""BEVFormer's two encoder attentions on mmcv 2.1's multi-scale deformable
attention core (its CUDA kernel on GPU tensors, its PyTorch path elsewhere).

* :class:`TemporalSelfAttention` (TSA): each BEV query samples, around its
  reference point, both the previous BEV (aligned to the current ego pose)
  and the current BEV queries; offsets and weights are predicted from the
  concatenation ``[prev_bev, query]``; the two results are averaged.
* :class:`SpatialCrossAttention` (SCA): each BEV query samples the image
  features of every camera that its 3-D reference pillar hits, around the
  projected pillar points (:class:`MSDeformableAttention3D`), and the results
  are averaged over the cameras that see it. Only the queries a camera sees
  are computed for it (queries are re-batched per camera), so the cost grows
  with the hits, not with ``cameras x queries``; ``dense=True`` computes
  every query in every camera and masks instead (same result, the
  straightforward formulation the benchmark compares with).
"""
import math

import torch
import torch.nn as nn
from mmengine.model import BaseModule, constant_init, xavier_init

__all__ = ['ms_deform_attn', 'TemporalSelfAttention', 'MSDeformableAttention3D',
           'SpatialCrossAttention']


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations,
                   attention_weights, im2col_step: int = 64):
    """mmcv's multi-scale deformable attention core.

    value ``(bs, num_value, heads, head_dims)``, sampling_locations
    ``(bs, nq, heads, levels, points, 2)`` normalised to [0, 1],
    attention_weights ``(bs, nq, heads, levels, points)`` -> ``(bs, nq, heads * head_dims)``.
    The CUDA kernel on CUDA tensors, mmcv's PyTorch path (bilinear
    ``grid_sample``) otherwise, as mmcv's own module does.
    """
    from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                                  multi_scale_deformable_attn_pytorch)
    if value.is_cuda:
        dtype = value.dtype
        out = MultiScaleDeformableAttnFunction.apply(
            value.float(), spatial_shapes, level_start_index, sampling_locations.float(),
            attention_weights.float(), im2col_step)
        return out.to(dtype)
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                               attention_weights)


def _init_sampling(m, num_levels):
    """Upstream's init of a deformable attention's sampling layers: zero
    offset weights with a bias that puts head h in direction 2*pi*h/heads
    and point k at distance k+1 (for each of ``num_levels`` levels), uniform
    attention weights, Xavier value projection."""
    H, P = m.num_heads, m.num_points
    constant_init(m.sampling_offsets, 0.)
    thetas = torch.arange(H, dtype=torch.float32) * (2.0 * math.pi / H)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = (grid / grid.abs().max(-1, keepdim=True)[0])
    grid = grid.view(H, 1, 1, 2).repeat(1, num_levels, P, 1)
    for i in range(P):
        grid[:, :, i, :] *= i + 1
    m.sampling_offsets.bias.data = grid.view(-1)
    constant_init(m.attention_weights, val=0., bias=0.)
    xavier_init(m.value_proj, distribution='uniform', bias=0.)


class TemporalSelfAttention(BaseModule):
    """TSA over ``(prev_bev, current BEV query)``; see the module docstring.

    Args:
        embed_dims, num_heads, num_levels (1: the BEV), num_points,
        num_bev_queue (2: previous and current), dropout.
    """

    def __init__(self, embed_dims=256, num_heads=8, num_levels=1, num_points=4,
                 num_bev_queue=2, dropout=0.1, im2col_step=64, init_cfg=None):
        super().__init__(init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points, self.num_bev_queue = num_levels, num_points, \
            num_bev_queue
        self.im2col_step = im2col_step
        q = num_bev_queue
        self.sampling_offsets = nn.Linear(embed_dims * q, q * num_heads * num_levels
                                          * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims * q, q * num_heads * num_levels
                                           * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self):
        _init_sampling(self, self.num_levels * self.num_bev_queue)
        xavier_init(self.output_proj, distribution='uniform', bias=0.)

    def forward(self, query, value=None, prev_valid=None, query_pos=None,
                reference_points=None, spatial_shapes=None, level_start_index=None):
        """query ``(bs, Q, C)``; value ``(bs, 2, Q, C)`` = (aligned previous BEV,
        current BEV queries) or None, in which case (and for the samples whose
        ``prev_valid`` entry is False) the current query stands in for both;
        reference_points ``(bs, num_bev_queue, Q, levels, 2)`` (previous
        first); spatial_shapes ``[[bev_h, bev_w]]``. Returns ``(bs, Q, C)``
        with the residual added."""
        bs, nq, C = query.shape
        identity = query
        own = torch.stack((query, query), 1)
        if value is None:
            value = own
        elif prev_valid is not None:
            value = torch.where(prev_valid.view(bs, 1, 1, 1), value, own)
        if query_pos is not None:
            query = query + query_pos
        qcat = torch.cat((value[:, 0], query), -1)                # (bs, Q, 2C)
        nbq, H, L, P = self.num_bev_queue, self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).reshape(bs * nbq, -1, H, C // H)
        off = self.sampling_offsets(qcat).view(bs, nq, H, nbq, L, P, 2)
        off = off.permute(0, 3, 1, 2, 4, 5, 6).reshape(bs * nbq, nq, H, L, P, 2)
        w = self.attention_weights(qcat).view(bs, nq, H, nbq, L * P)
        w = w.permute(0, 3, 1, 2, 4).reshape(bs * nbq, nq, H, L * P).softmax(-1)
        w = w.view(bs * nbq, nq, H, L, P)
        ref = reference_points.reshape(bs * nbq, nq, L, 2)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
        loc = ref[:, :, None, :, None, :] + off / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn(v, spatial_shapes, level_start_index, loc, w, self.im2col_step)
        out = out.view(bs, nbq, nq, C).mean(1)
        return self.dropout(self.output_proj(out)) + identity


class MSDeformableAttention3D(BaseModule):
    """Deformable attention around ``D`` projected pillar points: each of the
    ``num_points`` samples of a head/level belongs to one pillar point
    (``num_points`` must be a multiple of ``D``). No output projection (SCA
    has it)."""

    def __init__(self, embed_dims=256, num_heads=8, num_levels=4, num_points=8,
                 im2col_step=64, init_cfg=None):
        super().__init__(init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points, self.im2col_step = num_levels, num_points, \
            im2col_step
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self):
        _init_sampling(self, self.num_levels)

    def forward(self, query, value, reference_points, spatial_shapes, level_start_index):
        """query ``(B, Q, C)``, value ``(B, V, C)``, reference_points
        ``(B, Q, D, 2)`` normalised -> ``(B, Q, C)``."""
        B, nq, C = query.shape
        H, L, P = self.num_heads, self.num_levels, self.num_points
        D = reference_points.shape[2]
        if P % D:
            raise ValueError(f'num_points ({P}) must be a multiple of the pillar points '
                             f'({D})')
        v = self.value_proj(value).view(B, value.shape[1], H, C // H)
        off = self.sampling_offsets(query).view(B, nq, H, L, P, 2)
        w = self.attention_weights(query).view(B, nq, H, L * P).softmax(-1).view(B, nq, H, L, P)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
        off = off / normalizer[None, None, None, :, None, :]
        off = off.view(B, nq, H, L, P // D, D, 2)
        loc = reference_points[:, :, None, None, None, :, :] + off
        loc = loc.reshape(B, nq, H, L, P, 2)
        return ms_deform_attn(v, spatial_shapes, level_start_index, loc, w, self.im2col_step)


class SpatialCrossAttention(BaseModule):
    """SCA; see the module docstring. ``deformable_attention`` holds the
    :class:`MSDeformableAttention3D` settings."""

    def __init__(self, embed_dims=256, num_cams=6, dropout=0.1, num_heads=8, num_levels=4,
                 num_points=8, im2col_step=64, dense=False, init_cfg=None):
        super().__init__(init_cfg)
        self.embed_dims, self.num_cams, self.dense = embed_dims, num_cams, dense
        self.deformable_attention = MSDeformableAttention3D(
            embed_dims, num_heads, num_levels, num_points, im2col_step)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        xavier_init(self.output_proj, distribution='uniform', bias=0.)

    def forward(self, query, value, reference_points_cam, bev_mask, spatial_shapes,
                level_start_index, query_pos=None):
        """query ``(bs, Q, C)``; value ``(N, bs, V, C)`` per-camera flattened
        multi-level features; reference_points_cam ``(N, bs, Q, D, 2)``;
        bev_mask ``(N, bs, Q, D)``. Returns ``(bs, Q, C)`` with the residual."""
        N, bs, nv, C = value.shape
        nq = query.shape[1]
        identity = query
        if query_pos is not None:
            query = query + query_pos
        hit = bev_mask.any(-1)                                     # (N, bs, Q)
        attn = self.deformable_attention
        if self.dense:
            q = query[None].expand(N, -1, -1, -1).reshape(N * bs, nq, C)
            out = attn(q, value.reshape(N * bs, nv, C),
                       reference_points_cam.reshape(N * bs, nq, -1, 2),
                       spatial_shapes, level_start_index).view(N, bs, nq, C)
            slots = (out * hit[..., None].to(out.dtype)).sum(0)
        else:
            # re-batch: per (camera, sample) only the queries that camera sees
            counts = hit.sum(-1)                                    # (N, bs)
            max_len = int(counts.max()) if counts.numel() else 0
            slots = query.new_zeros(bs, nq, C)
            if max_len > 0:
                D = reference_points_cam.shape[3]
                order = torch.argsort((~hit).to(torch.int8), dim=-1, stable=True)
                idx = order[..., :max_len]                           # (N, bs, max_len)
                valid = torch.arange(max_len, device=query.device) < counts[..., None]
                q_sel = torch.gather(query[None].expand(N, -1, -1, -1), 2,
                                     idx[..., None].expand(-1, -1, -1, C))
                r_sel = torch.gather(reference_points_cam, 2,
                                     idx[..., None, None].expand(-1, -1, -1, D, 2))
                out = attn(q_sel.reshape(N * bs, max_len, C), value.reshape(N * bs, nv, C),
                           r_sel.reshape(N * bs, max_len, D, 2), spatial_shapes,
                           level_start_index).view(N, bs, max_len, C)
                out = out * valid[..., None].to(out.dtype)
                flat = (idx + torch.arange(bs, device=idx.device)[None, :, None] * nq)
                slots = slots.view(bs * nq, C).index_add(
                    0, flat.reshape(-1), out.reshape(-1, C)).view(bs, nq, C)
        count = hit.sum(0).clamp(min=1).to(slots.dtype)             # (bs, Q)
        slots = slots / count[..., None]
        return self.dropout(self.output_proj(slots)) + identity
