"""BEVFormer's perception transformer: the BEV encoder (temporal self-attention,
then spatial cross-attention, then an FFN, each followed by a LayerNorm) and
the DETR-style decoder over the BEV with iterative box refinement.

Written from the BEVFormer paper and upstream's documented behaviour; the
attention cores are mmcv 2.1's (``MultiScaleDeformableAttention`` for the
decoder, its deformable core for the encoder attentions)."""
import copy
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmcv.ops import MultiScaleDeformableAttention
from mmengine.model import BaseModule, xavier_init
from mmdet.models.layers.transformer import inverse_sigmoid

from .attention import SpatialCrossAttention, TemporalSelfAttention
from .geometry import (bev_reference_points_2d, bev_reference_points_3d,
                       bev_shift_from_can_bus, project_reference_points, rotate_bev)

__all__ = ['BEVFormerEncoderLayer', 'BEVFormerEncoder', 'BEVFormerDecoderLayer',
           'BEVFormerDecoder', 'PerceptionTransformer']


def _level_meta(shapes: Sequence, device):
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device).view(-1, 2)
    start = torch.cat((spatial_shapes.new_zeros((1, )),
                       spatial_shapes.prod(1).cumsum(0)[:-1]))
    return spatial_shapes, start


class BEVFormerEncoderLayer(BaseModule):
    """TSA -> norm -> SCA -> norm -> FFN -> norm."""

    def __init__(self, embed_dims=256, num_cams=6, num_heads=8, num_levels=1,
                 tsa_points=4, sca_points=8, ffn_dims=512, dropout=0.1, init_cfg=None):
        super().__init__(init_cfg)
        self.tsa = TemporalSelfAttention(embed_dims, num_heads, 1, tsa_points, 2, dropout)
        self.sca = SpatialCrossAttention(embed_dims, num_cams, dropout, num_heads, num_levels,
                                         sca_points)
        self.ffn = FFN(embed_dims, ffn_dims, num_fcs=2, ffn_drop=dropout,
                       act_cfg=dict(type='ReLU', inplace=True))
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))

    def forward(self, query, bev_pos, tsa_value, prev_valid, ref_2d, bev_shapes, bev_start,
                feats, ref_cam, bev_mask, spatial_shapes, level_start):
        query = self.norms[0](self.tsa(query, tsa_value, prev_valid, bev_pos, ref_2d,
                                       bev_shapes, bev_start))
        query = self.norms[1](self.sca(query, feats, ref_cam, bev_mask, spatial_shapes,
                                       level_start, query_pos=bev_pos))
        return self.norms[2](self.ffn(query))


class BEVFormerEncoder(BaseModule):
    """Stack of :class:`BEVFormerEncoderLayer` over one BEV grid.

    Args:
        num_layers: encoder layers (upstream: 3 tiny/small, 6 base).
        pc_range: the BEV / detection range ``[x0, y0, z0, x1, y1, z1]``.
        num_points_in_pillar: pillar heights projected into the cameras (4).
        layer: kwargs of every :class:`BEVFormerEncoderLayer`.
    """

    def __init__(self, num_layers=3, pc_range=(-51.2, -51.2, -5.0, 51.2, 51.2, 3.0),
                 num_points_in_pillar=4, layer=None, init_cfg=None):
        super().__init__(init_cfg)
        self.pc_range = list(pc_range)
        self.num_points_in_pillar = num_points_in_pillar
        self.layers = nn.ModuleList(BEVFormerEncoderLayer(**(layer or {}))
                                    for _ in range(num_layers))

    def forward(self, bev_query, feats, spatial_shapes, level_start, bev_h, bev_w, bev_pos,
                lidar2img, img_shapes, pad_shape, prev_bev=None, prev_valid=None, shift=None):
        """bev_query/bev_pos ``(bs, Q, C)``; feats ``(N, bs, V, C)``; prev_bev
        ``(bs, Q, C)`` already rotated (or None); prev_valid ``(bs,)`` bool;
        shift ``(bs, 2)``. Returns the BEV ``(bs, Q, C)``."""
        bs = bev_query.shape[0]
        dev, dt = bev_query.device, bev_query.dtype
        ref_3d = bev_reference_points_3d(bev_h, bev_w, self.num_points_in_pillar, bs, dev, dt)
        ref_2d = bev_reference_points_2d(bev_h, bev_w, bs, dev, dt)
        ref_cam, bev_mask = project_reference_points(ref_3d, self.pc_range, lidar2img,
                                                     img_shapes, pad_shape)
        shifted = ref_2d + (shift[:, None, None, :] if shift is not None else 0)
        hybrid_ref = torch.stack((shifted, ref_2d), 1)              # previous first
        tsa_value = None
        if prev_bev is not None:
            tsa_value = torch.stack((prev_bev, bev_query), 1)
        bev_shapes, bev_start = _level_meta([[bev_h, bev_w]], dev)
        out = bev_query
        for layer in self.layers:
            out = layer(out, bev_pos, tsa_value, prev_valid, hybrid_ref, bev_shapes, bev_start,
                        feats, ref_cam, bev_mask, spatial_shapes, level_start)
        return out


class BEVFormerDecoderLayer(BaseModule):
    """Self-attention -> norm -> deformable cross-attention on the BEV -> norm
    -> FFN -> norm."""

    def __init__(self, embed_dims=256, num_heads=8, num_points=4, ffn_dims=512, dropout=0.1,
                 init_cfg=None):
        super().__init__(init_cfg)
        self.self_attn = MultiheadAttention(embed_dims, num_heads, attn_drop=dropout,
                                            proj_drop=dropout, batch_first=True)
        self.cross_attn = MultiScaleDeformableAttention(
            embed_dims, num_heads, num_levels=1, num_points=num_points, dropout=dropout,
            batch_first=True)
        self.ffn = FFN(embed_dims, ffn_dims, num_fcs=2, ffn_drop=dropout,
                       act_cfg=dict(type='ReLU', inplace=True))
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))

    def forward(self, query, query_pos, bev, reference_points, bev_shapes, bev_start):
        query = self.norms[0](self.self_attn(query, query_pos=query_pos, key_pos=query_pos))
        query = self.norms[1](self.cross_attn(
            query, value=bev, query_pos=query_pos, reference_points=reference_points,
            spatial_shapes=bev_shapes, level_start_index=bev_start))
        return self.norms[2](self.ffn(query))


class BEVFormerDecoder(BaseModule):
    """Decoder with iterative refinement of the 3-D reference points: after each
    layer the regression branch of that layer moves (x, y) by code dims 0:2
    and z by code dim 4, in inverse-sigmoid space (detached between layers)."""

    def __init__(self, num_layers=6, layer=None, init_cfg=None):
        super().__init__(init_cfg)
        self.layers = nn.ModuleList(BEVFormerDecoderLayer(**(layer or {}))
                                    for _ in range(num_layers))

    def forward(self, query, query_pos, bev, reference_points, bev_shapes, bev_start,
                reg_branches: Optional[nn.ModuleList] = None):
        """Returns ``(states (L, bs, nq, C), references (L, bs, nq, 3))``:
        ``references[l]`` is the sigmoid reference after layer ``l``."""
        states, refs = [], []
        out = query
        for lid, layer in enumerate(self.layers):
            ref_in = reference_points[..., :2].unsqueeze(2)         # (bs, nq, 1, 2)
            out = layer(out, query_pos, bev, ref_in, bev_shapes, bev_start)
            if reg_branches is not None:
                tmp = reg_branches[lid](out)
                new_ref = torch.zeros_like(reference_points)
                new_ref[..., :2] = tmp[..., :2] + inverse_sigmoid(reference_points[..., :2])
                new_ref[..., 2:3] = tmp[..., 4:5] + inverse_sigmoid(reference_points[..., 2:3])
                reference_points = new_ref.sigmoid().detach()
            states.append(out)
            refs.append(reference_points)
        return torch.stack(states), torch.stack(refs)


class PerceptionTransformer(BaseModule):
    """BEV features from multi-camera features, then the decoder.

    Args:
        embed_dims: feature width (256).
        num_cams: cameras (6), num_feature_levels: neck outputs used (1 tiny/small, 4 base).
        encoder / decoder: kwargs of :class:`BEVFormerEncoder` / :class:`BEVFormerDecoder`.
        rotate_prev_bev, use_shift, use_can_bus, use_cams_embeds: upstream's switches.
        lidar_yaw_deg: the LiDAR's yaw in the ego frame (-90 for nuScenes'
            LIDAR_TOP), used to express the ego translation in BEV axes.
        can_bus_norm: LayerNorm after the CAN-bus MLP (upstream: True).
    """

    def __init__(self, embed_dims=256, num_cams=6, num_feature_levels=4, encoder=None,
                 decoder=None, rotate_prev_bev=True, use_shift=True, use_can_bus=True,
                 can_bus_norm=True, use_cams_embeds=True, lidar_yaw_deg=-90.0, init_cfg=None):
        super().__init__(init_cfg)
        self.embed_dims, self.num_cams = embed_dims, num_cams
        self.num_feature_levels = num_feature_levels
        enc = copy.deepcopy(encoder or {})
        enc.setdefault('layer', {})
        enc['layer'] = dict(enc['layer'], embed_dims=embed_dims, num_cams=num_cams,
                            num_levels=num_feature_levels)
        self.encoder = BEVFormerEncoder(**enc)
        dec = copy.deepcopy(decoder or {})
        dec['layer'] = dict(dec.get('layer', {}), embed_dims=embed_dims)
        self.decoder = BEVFormerDecoder(**dec)
        self.pc_range = self.encoder.pc_range
        self.rotate_prev_bev, self.use_shift = rotate_prev_bev, use_shift
        self.use_can_bus, self.use_cams_embeds = use_can_bus, use_cams_embeds
        self.lidar_yaw_deg = lidar_yaw_deg
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims))
        self.reference_points = nn.Linear(embed_dims, 3)
        mlp = [nn.Linear(18, embed_dims // 2), nn.ReLU(inplace=True),
               nn.Linear(embed_dims // 2, embed_dims), nn.ReLU(inplace=True)]
        if can_bus_norm:
            mlp.append(nn.LayerNorm(embed_dims))
        self.can_bus_mlp = nn.Sequential(*mlp)

    def init_weights(self):
        super().init_weights()
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)
        xavier_init(self.reference_points, distribution='uniform', bias=0.)
        for m in self.can_bus_mlp:
            if isinstance(m, nn.Linear):
                xavier_init(m, distribution='uniform', bias=0.)

    def flatten_features(self, mlvl_feats: List[torch.Tensor]):
        """``[(bs, N, C, h, w)] * L`` -> ``(N, bs, V, C)`` with camera and
        level embeddings added, plus the level shapes / start indices."""
        flat, shapes = [], []
        for lvl, feat in enumerate(mlvl_feats):
            bs, N, C, h, w = feat.shape
            shapes.append((h, w))
            f = feat.flatten(3).permute(1, 0, 3, 2)                  # (N, bs, hw, C)
            if self.use_cams_embeds:
                f = f + self.cams_embeds[:N, None, None, :].to(f.dtype)
            f = f + self.level_embeds[None, None, lvl:lvl + 1, :].to(f.dtype)
            flat.append(f)
        spatial_shapes, start = _level_meta(shapes, mlvl_feats[0].device)
        return torch.cat(flat, 2), spatial_shapes, start

    def get_bev_features(self, mlvl_feats, bev_queries, bev_h, bev_w, bev_pos, can_bus,
                         lidar2img, img_shapes, pad_shape, prev_bev=None, prev_valid=None):
        """mlvl_feats ``[(bs, N, C, h, w)]``; bev_queries ``(Q, C)``; bev_pos
        ``(bs, C, bev_h, bev_w)``; can_bus ``(bs, 18)`` relative (upstream's
        convention); prev_bev ``(bs, Q, C)`` or None. Returns ``(bs, Q, C)``."""
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(f'PerceptionTransformer: got {len(mlvl_feats)} feature levels '
                             f'from the neck but num_feature_levels={self.num_feature_levels}'
                             '; set the neck\'s num_outs to match')
        bs = mlvl_feats[0].shape[0]
        dt = mlvl_feats[0].dtype
        bev_queries = bev_queries[None].expand(bs, -1, -1).to(dt)
        bev_pos = bev_pos.flatten(2).transpose(1, 2).to(dt)
        real_w = self.pc_range[3] - self.pc_range[0]
        real_h = self.pc_range[4] - self.pc_range[1]
        can_bus = can_bus.to(dt)
        shift = bev_shift_from_can_bus(can_bus, bev_h, bev_w, real_h, real_w,
                                       self.lidar_yaw_deg) * float(self.use_shift)
        if prev_bev is not None and self.rotate_prev_bev:
            prev_bev = rotate_bev(prev_bev, can_bus[:, -1], bev_h, bev_w)
        bev_queries = bev_queries + self.can_bus_mlp(can_bus)[:, None, :] * float(
            self.use_can_bus)
        feats, spatial_shapes, level_start = self.flatten_features(mlvl_feats)
        return self.encoder(bev_queries, feats, spatial_shapes, level_start, bev_h, bev_w,
                            bev_pos, lidar2img, img_shapes, pad_shape, prev_bev, prev_valid,
                            shift)

    def decode(self, bev, object_query_embed, bev_h, bev_w, reg_branches=None):
        """Decoder over the BEV. object_query_embed ``(nq, 2C)`` = (pos, query).
        Returns states ``(L, bs, nq, C)``, init reference ``(bs, nq, 3)`` and
        per-layer references ``(L, bs, nq, 3)``."""
        bs = bev.shape[0]
        query_pos, query = torch.split(object_query_embed, self.embed_dims, dim=1)
        query_pos = query_pos[None].expand(bs, -1, -1).to(bev.dtype)
        query = query[None].expand(bs, -1, -1).to(bev.dtype)
        init_ref = self.reference_points(query_pos).sigmoid()
        bev_shapes, bev_start = _level_meta([[bev_h, bev_w]], bev.device)
        states, refs = self.decoder(query, query_pos, bev, init_ref, bev_shapes, bev_start,
                                    reg_branches)
        return states, init_ref, refs
