"""ViT-Adapter (Chen et al., ICLR 2023) around a plain backbone of ours.

A plain model has one stride-16 token grid; the adapter gives it a
four-level pyramid the way upstream's detection and segmentation recipes of
Vision-RWKV, PlainMamba and DeiT do:

* a *spatial prior module* (SPM): a small conv stem on the image whose
  features at strides 8 / 16 / 32 (``c``, plus a learned level embedding)
  and 4 (``c1``) carry local detail;
* ``len(interaction_indexes)`` *interaction blocks*, each around a run of the
  plain model's blocks: an *injector* (the tokens attend to ``c`` by
  multi-scale deformable attention, scaled by a learned ``gamma``) before the
  run, an *extractor* (``c`` attends to the tokens, then a ConvFFN whose
  depthwise conv runs on each level's map) after it, and in the last block
  two extra extractors;
* the output: ``c`` split back into its three maps, ``c1 + up(c2)`` (a
  stride-2 transposed conv) at stride 4, optionally the plain model's own
  tokens added at all four scales (bilinear resize; upstream's
  ``add_rwkv_feature`` / ``add_vit_feature``), and a norm per output.

The deformable attention is :class:`MSDeformAttn` (Deformable DETR's module
with ViT-Adapter's ``ratio``: values projected to ``ratio * dim``) computing
with mmcv 2.1's multi-scale deformable attention kernel on CUDA tensors
(when mmcv was built with its CUDA ops; otherwise, with a warning, as on
the CPU) and
:func:`deform_attn_torch` (mmcv's ``grid_sample`` formula, with sizes a
traced graph keeps dynamic) on the CPU.  mmcv is imported
when the attention first runs, so ``import mmvisbackbones`` does not need
it.  Parameter names follow upstream's (the plain model under ``vit.``, the
output norms ``norm0`` .. ``norm3`` for upstream's ``norm1`` .. ``norm4``):
:func:`convert_vit_adapter_checkpoint` maps their checkpoints.

Inputs are zero-padded to a multiple of 32 (upstream needs exact multiples:
its level sizes are ``H // 8`` .. ``H // 32``) and the outputs cropped to
``ceil(H / stride)``.
"""
import math
import warnings
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.registry import MODELS

from ..layers import DropPath, build_norm2d, pad_to_multiple, resize_pos_embed
from .base import BaseBackbone
from .plain import PlainBackbone

NORMS = ('bn', 'syncbn', 'ln2d')


# ------------------------------------------------------------------ attention
class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR), values projected
    to ``int(dim * ratio)`` channels (ViT-Adapter's ``deform_ratio``).

    ``forward(query (N, Lq, dim), reference_points (N|1, Lq, 1|levels, 2) in
    [0, 1] as (x, y), value_in (N, Lv, dim), spatial_shapes (levels, 2) as
    (H, W), level_start_index (levels,), sizes [(H, W), ...])`` -> ``(N, Lq,
    dim)``; unlike mmcv's ``MultiScaleDeformableAttention`` module it adds no
    identity."""

    def __init__(self, dim: int, n_levels: int, n_heads: int, n_points: int,
                 ratio: float = 1.0):
        super().__init__()
        value_dim = int(dim * ratio)
        if dim % n_heads or value_dim % n_heads:
            raise ValueError(f'MSDeformAttn: dim {dim} and its value width {value_dim} '
                             f'(ratio {ratio}) must be divisible by {n_heads} heads')
        self.dim, self.n_levels, self.n_heads, self.n_points = dim, n_levels, n_heads, n_points
        self.value_dim = value_dim
        self.im2col_step = 64
        self.sampling_offsets = nn.Linear(dim, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(dim, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(dim, value_dim)
        self.output_proj = nn.Linear(value_dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Deformable DETR's init: zero offset weights, offset biases on rays
        at ``2 pi k / heads`` scaled 1..points, uniform attention, Xavier
        projections."""
        self.sampling_offsets.weight.zero_()
        theta = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        ray = torch.stack([theta.cos(), theta.sin()], -1)
        ray = ray / ray.abs().max(-1, keepdim=True)[0]
        grid = ray.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid *= torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.flatten())
        self.attention_weights.weight.zero_()
        self.attention_weights.bias.zero_()
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            lin.bias.zero_()

    def forward(self, query, reference_points, value_in, spatial_shapes, level_start_index,
                sizes):
        from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
        N, Lq, _ = query.shape
        Lv = value_in.shape[1]
        value = self.value_proj(value_in).view(N, Lv, self.n_heads, self.value_dim // self.n_heads)
        offsets = self.sampling_offsets(query).view(N, Lq, self.n_heads, self.n_levels,
                                                    self.n_points, 2)
        weights = self.attention_weights(query).view(N, Lq, self.n_heads, -1).softmax(-1)
        weights = weights.view(N, Lq, self.n_heads, self.n_levels, self.n_points)
        normalizer = spatial_shapes.flip(-1).to(offsets.dtype)       # (W, H) per level
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        if value.is_cuda and mmcv_has_cuda_ops():
            out = MultiScaleDeformableAttnFunction.apply(
                value.contiguous(), spatial_shapes, level_start_index, locations.contiguous(),
                weights.contiguous(), self.im2col_step)
        else:
            out = deform_attn_torch(value, sizes, locations, weights)
        return self.output_proj(out)


_CUDA_OPS = {}


def mmcv_has_cuda_ops() -> bool:
    """Whether mmcv was built with its CUDA ops.  Without them (an mmcv built
    on a machine without CUDA) the adapter computes the same attention by
    :func:`deform_attn_torch` on the GPU too, slower, and warns once."""
    if 'ok' not in _CUDA_OPS:
        from mmcv.ops import get_compiling_cuda_version
        _CUDA_OPS['ok'] = get_compiling_cuda_version() not in ('', 'not available')
        if not _CUDA_OPS['ok']:
            warnings.warn('ViTAdapter: mmcv was built without its CUDA ops, so the '
                          'deformable attention runs as grid_sample in PyTorch on the GPU '
                          '(same result, slower). Rebuild mmcv with CUDA (FORCE_CUDA=1) for '
                          'its kernel.', RuntimeWarning, stacklevel=3)
    return _CUDA_OPS['ok']


def reference_points(sizes, device):
    """Pixel centres of every level ``(H, W)`` normalised to [0, 1], as
    ``(1, sum H W, 1, 2)`` (x, y).  (``arange``: a traced graph keeps the
    sizes dynamic; the values equal ``linspace(0.5, H - 0.5, H) / H``.)"""
    pts = []
    for H, W in sizes:
        ys = (torch.arange(H, device=device, dtype=torch.float32) + 0.5) / H
        xs = (torch.arange(W, device=device, dtype=torch.float32) + 0.5) / W
        y, x = torch.meshgrid(ys, xs, indexing='ij')
        pts.append(torch.stack([x.reshape(-1), y.reshape(-1)], -1))
    return torch.cat(pts, 0)[None, :, None]


def deform_inputs(H, W, device):
    """The injector's and the extractor's deformable-attention inputs for an
    ``H x W`` (multiple of 32) image: the injector's queries are the
    stride-16 tokens over the SPM's strides 8 / 16 / 32, the extractor's the
    SPM's three levels over the stride-16 tokens.  Each is ``(reference
    points, spatial shapes (levels, 2), level start index, [(h, w), ...])``;
    the list carries the sizes themselves (traced values when exporting)."""
    levels = [(H // 8, W // 8), (H // 16, W // 16), (H // 32, W // 32)]
    if torch.jit.is_tracing():
        shapes = torch.stack([torch.stack([torch.as_tensor(h), torch.as_tensor(w)])
                              for h, w in levels]).to(device)
    else:
        shapes = torch.as_tensor(levels, dtype=torch.long, device=device)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    inject = (reference_points([levels[1]], device), shapes, starts, levels)
    extract = (reference_points(levels, device), shapes[1:2], shapes.new_zeros(1), levels[1:2])
    return inject, extract


def deform_attn_torch(value, sizes, locations, weights):
    """Multi-scale deformable attention by ``grid_sample`` (the CPU path,
    eager and exported alike): the formula of mmcv's
    ``multi_scale_deformable_attn_pytorch``, with the level sizes taken from
    ``sizes`` (traced values in an exported graph) instead of mmcv's tensor
    of shapes, which a tracer turns into constants."""
    N, _, heads, dims = value.shape
    _, Lq, _, levels, points, _ = locations.shape
    grids = 2 * locations - 1
    sampled = []
    for lvl, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in sizes], 1), sizes)):
        v = v.flatten(2).transpose(1, 2).reshape(N * heads, dims, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode='bilinear', padding_mode='zeros',
                                     align_corners=False))
    weights = weights.transpose(1, 2).reshape(N * heads, 1, Lq, levels * points)
    out = (torch.stack(sampled, -2).flatten(-2) * weights).sum(-1)
    return out.view(N, heads * dims, Lq).transpose(1, 2).contiguous()


# ------------------------------------------------------------------ blocks
class ConvFFN(nn.Module):
    """Linear -> 3x3 depthwise conv on each of the three levels' maps ->
    GELU -> Linear (dropout after the activation and the output)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x, H, W):
        x = self.drop(self.act(self.dwconv(self.fc1(x), H, W)))
        return self.drop(self.fc2(x))


class DWConv(nn.Module):
    """One 3x3 depthwise conv applied to the stride-8 / 16 / 32 maps (``2H x
    2W``, ``H x W``, ``H/2 x W/2``) of concatenated level tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, H, W):
        B, _, C = x.shape
        sizes = [(2 * H, 2 * W), (H, W), (H // 2, W // 2)]
        parts = x.split([h * w for h, w in sizes], dim=1)
        return torch.cat([self.dwconv(p.transpose(1, 2).reshape(B, C, h, w)).flatten(2)
                          .transpose(1, 2) for p, (h, w) in zip(parts, sizes)], 1)


def _ln(dim):
    return nn.LayerNorm(dim, eps=1e-6)


class Injector(nn.Module):
    """tokens + gamma * MSDeformAttn(norm(tokens), norm(c)) over c's 3 levels."""

    def __init__(self, dim, heads, points, ratio, init_values, with_cp):
        super().__init__()
        self.with_cp = with_cp
        self.query_norm, self.feat_norm = _ln(dim), _ln(dim)
        self.attn = MSDeformAttn(dim, 3, heads, points, ratio)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x, c, deform):
        def inner(x, c):
            return x + self.gamma * self.attn(self.query_norm(x), deform[0], self.feat_norm(c),
                                              *deform[1:])
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner, x, c, use_reentrant=False)
        return inner(x, c)


class Extractor(nn.Module):
    """c + MSDeformAttn(norm(c), norm(tokens)), then c + DropPath(ConvFFN(norm(c)))."""

    def __init__(self, dim, heads, points, ratio, with_cffn, cffn_ratio, drop, drop_path,
                 with_cp):
        super().__init__()
        self.with_cp = with_cp
        self.query_norm, self.feat_norm = _ln(dim), _ln(dim)
        self.attn = MSDeformAttn(dim, 1, heads, points, ratio)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio), drop)
            self.ffn_norm = _ln(dim)
            self.drop_path = DropPath(drop_path)

    def forward(self, c, x, deform, H, W):
        def inner(c, x):
            c = c + self.attn(self.query_norm(c), deform[0], self.feat_norm(x), *deform[1:])
            if self.with_cffn:
                c = c + self.drop_path(self.ffn(self.ffn_norm(c), H, W))
            return c
        if self.with_cp and c.requires_grad:
            return cp.checkpoint(inner, c, x, use_reentrant=False)
        return inner(c, x)


class InteractionBlock(nn.Module):
    """Injector -> the plain model's blocks ``[start, end]`` -> extractor
    (-> two extra extractors)."""

    def __init__(self, dim, heads, points, ratio, init_values, with_cffn, cffn_ratio, drop,
                 drop_path, extra_extractor, with_cp):
        super().__init__()
        self.injector = Injector(dim, heads, points, ratio, init_values, with_cp)
        ext = dict(dim=dim, heads=heads, points=points, ratio=ratio, with_cffn=with_cffn,
                   cffn_ratio=cffn_ratio, drop=drop, drop_path=drop_path, with_cp=with_cp)
        self.extractor = Extractor(**ext)
        self.extra_extractors = (nn.Sequential(*[Extractor(**ext) for _ in range(2)])
                                 if extra_extractor else None)

    def forward(self, x, c, run_blocks, inject, extract, H, W):
        x = run_blocks(self.injector(x, c, inject))
        c = self.extractor(c, x, extract, H, W)
        for e in (self.extra_extractors or ()):
            c = e(c, x, extract, H, W)
        return x, c


def _conv_norm_relu(cin, cout, stride, norm):
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), build_norm2d(norm, cout),
            nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """Conv stem on the image: stride 4 (``c1``), 8, 16, 32 features, each
    projected to ``dim`` by a 1x1 conv (``fc1`` .. ``fc4``)."""

    def __init__(self, inplanes: int, dim: int, norm: str, with_c1: bool = True):
        super().__init__()
        self.stem = nn.Sequential(*_conv_norm_relu(3, inplanes, 2, norm),
                                  *_conv_norm_relu(inplanes, inplanes, 1, norm),
                                  *_conv_norm_relu(inplanes, inplanes, 1, norm),
                                  nn.MaxPool2d(3, 2, 1))
        self.conv2 = nn.Sequential(*_conv_norm_relu(inplanes, 2 * inplanes, 2, norm))
        self.conv3 = nn.Sequential(*_conv_norm_relu(2 * inplanes, 4 * inplanes, 2, norm))
        self.conv4 = nn.Sequential(*_conv_norm_relu(4 * inplanes, 4 * inplanes, 2, norm))
        self.fc1 = nn.Conv2d(inplanes, dim, 1) if with_c1 else None  # the stride-4 output only
        self.fc2 = nn.Conv2d(2 * inplanes, dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, dim, 1)

    def forward(self, x):
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return (None if self.fc1 is None else self.fc1(c1), self.fc2(c2), self.fc3(c3),
                self.fc4(c4))


# ------------------------------------------------------------------ model
@MODELS.register_module()
class ViTAdapter(BaseBackbone):
    """A plain backbone of ours (``backbone``: its config or module) with a
    ViT-Adapter; outputs strides 4 / 8 / 16 / 32, ``dim`` channels each.

    Args:
        backbone: a :class:`PlainBackbone` (config dict or module) without
            class tokens; its output norms and pyramid are dropped.  Its own
            ``init_cfg`` (an upstream classification checkpoint) is loaded
            by :meth:`init_weights` unless the adapter has one.
        interaction_indexes: ``[[start, end], ...]`` block ranges (inclusive)
            of the interaction blocks, covering the blocks in order.
        conv_inplane, n_points, deform_num_heads, init_values_inject,
        with_cffn, cffn_ratio, deform_ratio, use_extra_extractor: as
            upstream's ViT-Adapter.
        add_vit_feature: add the plain model's tokens at every scale
            (upstream Vision-RWKV's ``add_rwkv_feature``).
        norm: the SPM's and the outputs' norm, ``'syncbn'`` (upstream),
            ``'bn'`` (one device, CPU) or ``'ln2d'``.
        drop_path_rate: the extractors' ConvFFN drop path (None: the
            backbone's rate, as upstream).
        out_indices: outputs among strides 4 / 8 / 16 / 32.  Every output
            depends on every block, so all blocks always run; without output
            0 the stride-4 branch (``spm.fc1``, ``up``) is not built.
        frozen_stages: 0 freezes the plain model's patch and position
            embeddings, k >= 1 also its stages 0..k-1 (the adapter trains).
        norm_eval, with_cp, init_cfg: the common contract; ``init_cfg``
            ``Pretrained`` reads upstream's adapter checkpoints
            (:func:`convert_vit_adapter_checkpoint`).
    """

    has_classification_model = False

    def __init__(self, backbone: Union[dict, nn.Module], interaction_indexes: Sequence,
                 conv_inplane: int = 64, n_points: int = 4, deform_num_heads: int = 6,
                 init_values_inject: float = 0.0, with_cffn: bool = True,
                 cffn_ratio: float = 0.25, deform_ratio: float = 1.0,
                 add_vit_feature: bool = True, use_extra_extractor: bool = True,
                 norm: str = 'syncbn', drop_path_rate: Optional[float] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        vit = MODELS.build(backbone) if isinstance(backbone, dict) else backbone
        name = type(self).__name__
        if not isinstance(vit, PlainBackbone):
            raise TypeError(f'{name}: backbone must be a plain backbone (Vim, VisionRWKV, '
                            f'PlainMamba), got {type(vit).__name__}')
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, in_channels=vit.in_channels,
                         init_cfg=init_cfg)
        self._check_out_indices(vit.num_stages)
        if type(vit).add_tokens is not PlainBackbone.add_tokens:
            raise ValueError(f'{name}: {type(vit).__name__} adds class tokens; the adapter '
                             'needs the plain token grid (build it without them)')
        if norm not in NORMS:
            raise ValueError(f'{name}: norm must be one of {NORMS}, got {norm!r}')
        blocks = [blk for stage in vit.stages for blk in stage]
        idx = [tuple(int(i) for i in r) for r in interaction_indexes]
        flat = [i for s, e in idx for i in range(s, e + 1)]
        if not idx or any(len(r) != 2 or r[0] > r[1] for r in idx) or \
                flat != list(range(len(blocks))):
            raise ValueError(f'{name}: interaction_indexes {interaction_indexes} must be '
                             f'[start, end] ranges covering blocks 0..{len(blocks) - 1} '
                             'in order')
        # the plain model's own outputs are not used
        for i in vit.out_indices:
            delattr(vit, f'norm{i}')
        vit.fpns = nn.ModuleDict()
        self.vit = vit
        self._blocks = blocks  # a plain list: the modules belong to vit.stages
        dim = vit.embed_dims
        self.embed_dims = dim
        self.interaction_indexes = idx
        self.add_vit_feature = add_vit_feature
        if drop_path_rate is None:
            drop_path_rate = vit.drop_path_rate
        with_c1 = 0 in self.out_indices
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(conv_inplane, dim, norm, with_c1)
        self.interactions = nn.Sequential(*[
            InteractionBlock(dim, deform_num_heads, n_points, deform_ratio, init_values_inject,
                             with_cffn, cffn_ratio, 0.0, drop_path_rate,
                             use_extra_extractor and i == len(idx) - 1, with_cp)
            for i in range(len(idx))])
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2) if with_c1 else None
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm2d(norm, dim))
        self.num_features = [dim] * 4
        self.strides = [4, 8, 16, 32]
        self.reset_adapter_parameters()
        self._freeze_stages()

    # the plain model's stem and stages, for the contract's freezing
    @property
    def patch_embed(self) -> nn.Module:
        return self.vit.patch_embed

    @property
    def stages(self) -> nn.ModuleList:
        return self.vit.stages

    def frozen_modules(self) -> List[nn.Module]:
        mods = [self.vit.patch_embed] if self.frozen_stages >= 0 else []
        return mods + list(self.vit.stages[:max(self.frozen_stages, 0)])

    def frozen_params(self) -> List[nn.Parameter]:
        return self.vit.frozen_params()

    def unused_modules(self) -> List[nn.Module]:
        return []  # every output depends on every block

    @torch.no_grad()
    def reset_adapter_parameters(self):
        """Upstream's init of the adapter's modules: truncated-normal (0.02)
        linears, fan-out normal convs, unit norms; deformable attention as
        Deformable DETR; normal level embedding."""
        def init(m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                m.weight.normal_(0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    m.bias.zero_()
        for mod in (self.up, self.spm, self.interactions):
            if mod is not None:
                mod.apply(init)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    # ---------------------------------------------------------- numbering
    @property
    def num_layers(self) -> int:
        return self.vit.num_layers

    def layer_id(self, name: str) -> int:
        """Layer-wise lr decay: the plain model's parameters as it numbers
        them, the adapter's as the last layer (upstream's rule)."""
        if name.startswith('vit.'):
            return self.vit.layer_id(name[4:])
        return self.num_layers + 1

    # ------------------------------------------------------------ forward
    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        H0, W0 = x.shape[-2:]
        x = pad_to_multiple(x, 32)
        H, W = x.shape[-2:]
        inject, extract = deform_inputs(H, W, x.device)
        c1, c2, c3, c4 = self.spm(x)
        lv = [c.flatten(2).transpose(1, 2) + e for c, e in zip((c2, c3, c4), self.level_embed)]
        sizes = [t.shape[1] for t in lv]
        c = torch.cat(lv, 1)

        vit = self.vit
        tok, hw = vit.patch_embed(x)
        tok = tok + resize_pos_embed(vit.pos_embed, vit.pretrain_grid, hw)
        h, w = hw
        for (start, end), block in zip(self.interaction_indexes, self.interactions):
            def run(t, blocks=self._blocks[start:end + 1]):
                for blk in blocks:
                    if self.with_cp and torch.is_grad_enabled():
                        t = cp.checkpoint(vit.run_block, blk, t, hw, use_reentrant=False)
                    else:
                        t = vit.run_block(blk, t, hw)
                return t
            tok, c = block(tok, c, run, inject, extract, h, w)

        B, _, C = tok.shape
        c2, c3, c4 = [t.transpose(1, 2).reshape(B, C, hh, ww) for t, (hh, ww) in
                      zip(c.split(sizes, 1), ((2 * h, 2 * w), (h, w), (h // 2, w // 2)))]
        maps = {1: c2, 2: c3, 3: c4}
        if self.up is not None:
            maps[0] = self.up(c2) + c1
        x3 = tok.transpose(1, 2).reshape(B, C, h, w) if self.add_vit_feature else None
        outs = []
        for i in self.out_indices:
            o, s = maps[i], self.strides[i]
            if x3 is not None:
                o = o + (x3 if s == 16 else
                         F.interpolate(x3, scale_factor=16 / s, mode='bilinear',
                                       align_corners=False))
            o = getattr(self, f'norm{i}')(o)
            outs.append(o[..., :(H0 + s - 1) // s, :(W0 + s - 1) // s].contiguous())
        return outs

    def init_weights(self):
        """With ``init_cfg=dict(type='Pretrained', ...)``: an adapter
        checkpoint (ours or upstream's).  Otherwise the plain model's own
        ``init_cfg`` (e.g. an upstream classification checkpoint), the
        adapter keeping its initialisation."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            return super().init_weights()
        self.vit.init_weights()
        self._freeze_stages()

    @staticmethod
    def convert_checkpoint(state_dict, model: 'ViTAdapter'):
        return convert_vit_adapter_checkpoint(state_dict, model)


#: the keys of a family adapter's arch entry that configure the adapter (the
#: others configure its plain model)
ADAPTER_ARCH_KEYS = ('interaction_indexes', 'conv_inplane', 'n_points', 'deform_num_heads',
                     'deform_ratio', 'cffn_ratio')


def split_adapter_arch(arch: dict):
    """A family adapter's arch entry -> (the plain model's arch, the adapter's
    keyword arguments)."""
    return ({k: v for k, v in arch.items() if k not in ADAPTER_ARCH_KEYS},
            {k: arch[k] for k in ADAPTER_ARCH_KEYS if k in arch})


#: upstream key prefixes of the adapter's own modules (kept as they are)
ADAPTER_PREFIXES = ('spm.', 'interactions.', 'level_embed', 'up.')
#: upstream's output norms (``norm1`` .. ``norm4``, strides 4 .. 32)
UPSTREAM_NORMS = ('norm1.', 'norm2.', 'norm3.', 'norm4.')
#: PlainMamba's adapter's names for them
AD_NORMS = ('ad_norm1.', 'ad_norm2.', 'ad_norm3.', 'ad_norm4.')
#: prefixes of a detector's / segmentor's other parts (dropped)
HEAD_PREFIXES = ('neck.', 'rpn_head.', 'roi_head.', 'bbox_head.', 'decode_head.',
                 'auxiliary_head.', 'query_head.', 'panoptic_head.')


def convert_vit_adapter_checkpoint(state_dict, model: ViTAdapter):
    """An upstream ViT-Adapter checkpoint (Vision-RWKV's ``VRWKV_Adapter`` and
    PlainMamba's ``PlainMambaAdapter`` detection / segmentation weights:
    ``state_dict`` of the whole detector, ``backbone.`` keys) onto
    :class:`ViTAdapter`: the adapter's modules keep their names except the
    output norms (Vision-RWKV's ``norm1`` .. ``norm4``, PlainMamba's
    ``ad_norm1`` .. ``ad_norm4`` are our ``norm0`` .. ``norm3``), the plain
    model's keys (``patch_embed``, ``pos_embed``, ``layers.{i}``) go through
    the plain backbone's own converter under ``vit.``; heads and necks are dropped, and so are the
    parts this model does not build (the stride-4 branch, the norms of
    outputs it does not return).  A checkpoint already in our layout
    (``vit.`` keys) passes through.  A key that is neither is an error, and so
    is a classification checkpoint of the plain model (no adapter key: the
    error says where it goes); a checkpoint with nothing of either is
    returned unchanged, for the loader to name its keys."""
    if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], dict):
        state_dict = state_dict['state_dict']
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items()
                      if k.startswith('backbone.')}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(HEAD_PREFIXES)}
    if any(k.startswith('vit.') for k in state_dict):
        return state_dict
    own = {k.split('.')[0] for k in model.state_dict()}
    # PlainMamba's adapter names its output norms ad_norm1..4 (its norm keys,
    # if any, are the plain model's); Vision-RWKV's names them norm1..4
    norms = AD_NORMS if any(k.startswith(AD_NORMS) for k in state_dict) else UPSTREAM_NORMS
    adapter, plain = {}, {}
    for k, v in state_dict.items():
        if k.startswith(norms):
            n = len(norms[0]) - 2  # the digit's position
            k = f'norm{int(k[n]) - 1}' + k[n + 1:]
            if k.split('.')[0] in own:    # an output this model returns
                adapter[k] = v
        elif k.startswith(ADAPTER_PREFIXES):
            if not (model.up is None and k.startswith(('spm.fc1.', 'up.'))):
                adapter[k] = v
        else:
            plain[k] = v
    vit = model.vit
    if not any(k.startswith(ADAPTER_PREFIXES) for k in state_dict):
        # not an adapter checkpoint: a classification one of the plain model
        # (upstream's or ours), or another model's (the loader names its keys)
        converted = type(vit).convert_checkpoint(state_dict, vit)
        if not set(vit.state_dict()) & set(converted):
            return converted
        raise ValueError(
            f'convert_vit_adapter_checkpoint: the checkpoint has none of the adapter\'s keys '
            f'({", ".join(ADAPTER_PREFIXES)}) but {type(vit).__name__}\'s: a classification '
            f'checkpoint of the plain model? Give it as the plain model\'s init_cfg '
            f'(ViTAdapter: backbone=dict(init_cfg=...); {type(model).__name__}: '
            'backbone_init_cfg=...), not the adapter\'s')
    converted = type(vit).convert_checkpoint(plain, vit)
    known = set(vit.state_dict())
    unknown = sorted(set(converted) - known)
    if unknown:
        raise KeyError(f'convert_vit_adapter_checkpoint: keys that are neither the adapter\'s '
                       f'nor {type(vit).__name__}\'s: {unknown[:8]}'
                       f'{" ..." if len(unknown) > 8 else ""}')
    adapter.update({'vit.' + k: v for k, v in converted.items()})
    return adapter
