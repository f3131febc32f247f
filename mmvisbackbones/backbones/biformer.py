"""BiFormer (Zhu et al., CVPR 2023): vision transformer with bi-level routing
attention, on the common feature contract.

Faithful to the released ``rayleizhu/BiFormer`` models (``models/biformer.py``
with ``ops/bra_legacy.py``, and the mmdet/mmseg ``BiFormer_mm`` backbones):

* stem: conv3x3/2 -> BN -> GELU -> conv3x3/2 -> BN; between stages conv3x3/2
  -> BN (a stride-2 3x3 conv with padding 1 maps ``n -> ceil(n / 2)``);
* block (pre-norm): ``x + pos_embed(x)`` (3x3 depthwise conv), then
  ``x + DropPath(attn(norm1(x)))`` and ``x + DropPath(mlp(norm2(x)))`` on
  channel-last tokens, LayerNorm eps 1e-6, MLP ratio 3, optional layer scale;
* bi-level routing attention (BRA) for ``topk > 0``: one linear layer makes q,
  k (``qk_dim`` wide) and v; the map is padded right/bottom to a multiple of
  ``n_win`` and cut into ``n_win x n_win`` regions; region-level q/k (token
  means, detached) give region affinities, each query region keeps its
  ``topk`` best key regions; token attention over those regions' tokens with
  upstream's scale ``qk_scale or qk_dim ** -0.5``; LePE (5x5 depthwise conv)
  on v is added, then the output linear, then the padding is cropped;
* ``topk == -2``: global attention with LePE on the input (upstream's
  ``AttentionLePE``: 8 heads, no qkv bias); ``topk == -1``: global attention
  without LePE (upstream's ``Attention``).  Every official model uses
  ``topks = [1, 4, 16, -2]``;
* output norms ``norm{i}``: LayerNorm2d eps 1e-6 (``extra_norms`` upstream).

The routed attention runs through
:func:`mmvisbackbones.ops.routed_attention.routed_attention` (chunked gather,
online softmax, recomputing backward) instead of upstream's ``topk``-fold
k/v gather; ``routed_impl='gather'`` selects the straightforward gather
(upstream's formulation, for comparison).

Structure: BiLevelRoutingAttention / GlobalAttention -> BiFormerBlock ->
BiFormerStage -> BiFormer (model) + arch table + convert_biformer_checkpoint.
"""
import re
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, LayerNorm2d, Mlp, Stage, drop_path_schedule, init_linear_and_norm,
                      pad_to_multiple)
from ..ops.routed_attention import routed_attention, routed_attention_reference
from ..ops.routed_attention.chunked import DEFAULT_CHUNK
from ..registry import register_backbone
from ..utils.checkpoint import (blocks_by_stage, first_block_widths, rename_first_match,
                                stage_depths, variant_info)
from .base import BaseBackbone

ROUTED_IMPLS = ('chunked', 'gather')


def _regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(N, H, W, C) with H, W multiples of n_win -> (N, n_win^2, H*W / n_win^2, C),
    regions in row-major order, tokens row-major inside each region."""
    N, H, W, C = x.shape
    h, w = H // n_win, W // n_win
    return x.view(N, n_win, h, n_win, w, C).permute(0, 1, 3, 2, 4, 5).reshape(
        N, n_win * n_win, h * w, C)


def _unregions(x: torch.Tensor, n_win: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`_regions`."""
    N, _, _, C = x.shape
    h, w = H // n_win, W // n_win
    return x.view(N, n_win, n_win, h, w, C).permute(0, 1, 3, 2, 4, 5).reshape(N, H, W, C)


class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention on channel-last maps (N, H, W, C).

    Args:
        dim: channels of the input and of v.
        num_heads: heads of the token attention.
        n_win: regions per side (``n_win ** 2`` regions, any input size: the
            map is padded to a multiple of ``n_win``).
        topk: routed key/value regions per query region, ``1 <= topk <= n_win ** 2``.
        qk_dim: width of q and k (default ``dim``).
        qk_scale: logit scale (default ``qk_dim ** -0.5``, as upstream).
        side_dwconv: LePE kernel size (0: no LePE).
        routed_impl: ``'chunked'`` (memory-light, default) or ``'gather'``
            (upstream's straightforward gather).
        routed_chunk: routed regions per step of the chunked path.
    """

    def __init__(self, dim: int, num_heads: int, n_win: int, topk: int,
                 qk_dim: Optional[int] = None, qk_scale: Optional[float] = None,
                 side_dwconv: int = 5, routed_impl: str = 'chunked',
                 routed_chunk: int = DEFAULT_CHUNK):
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim = qk_dim or dim
        if qk_dim % num_heads or dim % num_heads:
            raise ValueError(f'BiLevelRoutingAttention: qk_dim {qk_dim} and dim {dim} must be '
                             f'divisible by num_heads {num_heads}')
        if not 1 <= topk <= n_win * n_win:
            raise ValueError(f'BiLevelRoutingAttention: topk={topk} routed regions must lie in '
                             f'[1, n_win**2 = {n_win * n_win}] (n_win={n_win})')
        if routed_impl not in ROUTED_IMPLS:
            raise ValueError(f'BiLevelRoutingAttention: routed_impl {routed_impl!r} not in '
                             f'{ROUTED_IMPLS}')
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.scale = qk_scale or qk_dim**-0.5
        self.routed_impl = routed_impl
        self.routed_chunk = int(routed_chunk)
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) \
            if side_dwconv > 0 else None
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, n_win={self.n_win}, topk={self.topk}, '
                f'routed_impl={self.routed_impl!r}')

    @torch.no_grad()
    def route(self, q_win: torch.Tensor, k_win: torch.Tensor) -> torch.Tensor:
        """Region-level routing (not differentiable, as upstream): (N, R, qk_dim)
        region queries/keys -> (N, R, topk) indices of the best key regions."""
        logits = (q_win * self.scale) @ k_win.transpose(-1, -2)  # (N, R, R)
        return torch.topk(logits, k=self.topk, dim=-1).indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, H_in, W_in, C = x.shape
        n = self.n_win
        x = pad_to_multiple(x, n, channels_last=True)
        H, W = x.shape[1:3]
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)

        m = self.num_heads
        q_r, k_r, v_r = _regions(q, n), _regions(k, n), _regions(v, n)  # (N, R, T, c)
        r_idx = self.route(q_r.mean(dim=2), k_r.mean(dim=2))

        def heads(t):  # (N, R, T, m*c) -> (N, R, m, T, c)
            # reshape, not unflatten: a traced unflatten (ONNX export) records
            # every size as a constant of the export shape
            return t.reshape(*t.shape[:-1], m, -1).transpose(2, 3)

        if self.routed_impl == 'chunked':
            out = routed_attention(heads(q_r), heads(k_r), heads(v_r), r_idx, self.scale,
                                   self.routed_chunk)
        else:
            out = routed_attention_reference(heads(q_r), heads(k_r), heads(v_r), r_idx,
                                             self.scale)
        out = _unregions(out.transpose(2, 3).flatten(3), n, H, W)  # (N, H, W, C)
        if self.lepe is not None:  # on the (padded) value map, as upstream
            out = out + self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.proj(out)
        if torch.jit.is_tracing() or (H, W) != (H_in, W_in):  # traced: crop by traced sizes
            out = out[:, :H_in, :W_in].contiguous()
        return out


class GlobalAttention(nn.Module):
    """Plain multi-head attention over all tokens of a channel-last map, with
    LePE on the input (upstream ``AttentionLePE``, ``topk=-2``) or without
    (``Attention``, ``topk=-1``, ``side_dwconv=0``)."""

    def __init__(self, dim: int, num_heads: int = 8, qk_scale: Optional[float] = None,
                 side_dwconv: int = 5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'GlobalAttention: dim {dim} not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads)**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) \
            if side_dwconv > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, H, W, C = x.shape
        qkv = self.qkv(x.reshape(N, H * W, C)).view(N, H * W, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (N, m, L, c)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(N, H, W, C)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


class BiFormerBlock(nn.Module):
    """NCHW in/out: x + pos_embed(x); then on channel-last tokens
    x + DropPath(g1 * attn(norm1(x))), x + DropPath(g2 * mlp(norm2(x)))."""

    def __init__(self, dim: int, drop_path: float = 0.0, topk: int = 4, n_win: int = 16,
                 head_dim: int = 32, qk_scale: Optional[float] = None, mlp_ratio: float = 3.0,
                 side_dwconv: int = 5, layer_scale_init_value: float = -1,
                 routed_impl: str = 'chunked', routed_chunk: int = DEFAULT_CHUNK):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, dim // head_dim, n_win, topk,
                                                qk_scale=qk_scale, side_dwconv=side_dwconv,
                                                routed_impl=routed_impl,
                                                routed_chunk=routed_chunk)
        elif topk in (-1, -2):  # upstream: global attention with default 8 heads
            self.attn = GlobalAttention(dim, side_dwconv=side_dwconv if topk == -2 else 0)
        else:
            raise ValueError(f'BiFormerBlock: topk={topk} is not supported (routed: >= 1; '
                             'global attention: -2 with LePE, -1 without)')
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path)
        if layer_scale_init_value > 0:
            self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + self.pos_embed(x)).permute(0, 2, 3, 1)  # NHWC
        a = self.attn(self.norm1(x))
        x = x + self.drop_path(a if self.gamma1 is None else self.gamma1 * a)
        f = self.mlp(self.norm2(x))
        x = x + self.drop_path(f if self.gamma2 is None else self.gamma2 * f)
        return x.permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Stem: conv3x3/2 -> BN -> GELU -> conv3x3/2 -> BN (stride 4)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, dim // 2, 3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(dim // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x):
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class Downsample(nn.Module):
    """conv3x3/2 -> BN between stages."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x):
        return self.norm(self.conv(x))


@register_backbone
class BiFormer(BaseBackbone):
    """BiFormer backbone for detection and segmentation.

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'``, ``'test'`` (a tiny arch for
            unit tests) or a dict with the keys of :attr:`arch_zoo` entries.
        out_indices: stages whose outputs are returned (strides 4, 8, 16, 32).
        n_win: regions per side of the routed attention (None: the arch's,
            16 = upstream's detection setting; upstream uses 7 for 224
            classification and 8 for 512 segmentation).
        drop_path_rate: stochastic depth at the last block (None: the arch's).
        qk_scale: override upstream's logit scale ``qk_dim ** -0.5``.
        routed_impl: ``'chunked'`` (memory-light routed attention, default) or
            ``'gather'`` (upstream's straightforward gather).
        routed_chunk: routed regions per step of the chunked path.
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`BaseBackbone`.
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts
            upstream's classification checkpoints (``biformer_*_in1k.pth``,
            under ``model``) and upstream's or this plugin's mmdet/mmseg
            checkpoints.
    """
    model_name = 'biformer'
    #: parameter counts upstream reports (classification model, head included)
    upstream_params = {'tiny': '13.1M', 'small': '25.5M', 'base': '56.8M'}
    arch_zoo = {
        # upstream biformer_tiny / _small / _base; drop_path_rate: upstream's
        # Mask R-CNN configs (S 0.2, B 0.3; upstream has none for T)
        'tiny': dict(depths=(2, 2, 8, 2), dims=(64, 128, 256, 512), topks=(1, 4, 16, -2),
                     head_dim=32, mlp_ratio=3.0, n_win=16, side_dwconv=5,
                     layer_scale_init_value=-1, drop_path_rate=0.1),
        'small': dict(depths=(4, 4, 18, 4), dims=(64, 128, 256, 512), topks=(1, 4, 16, -2),
                      head_dim=32, mlp_ratio=3.0, n_win=16, side_dwconv=5,
                      layer_scale_init_value=-1, drop_path_rate=0.2),
        'base': dict(depths=(4, 4, 18, 4), dims=(96, 192, 384, 768), topks=(1, 4, 16, -2),
                     head_dim=32, mlp_ratio=3.0, n_win=16, side_dwconv=5,
                     layer_scale_init_value=-1, drop_path_rate=0.3),
        # 4 regions; stage 2 routes to 2 of them, stage 3 to all 4
        'test': dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), topks=(1, 2, 4, -2),
                     head_dim=8, mlp_ratio=2.0, n_win=2, side_dwconv=5,
                     layer_scale_init_value=-1, drop_path_rate=0.1),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 n_win: Optional[int] = None,
                 drop_path_rate: Optional[float] = None,
                 qk_scale: Optional[float] = None,
                 routed_impl: str = 'chunked',
                 routed_chunk: int = DEFAULT_CHUNK,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, in_channels=in_channels,
                         init_cfg=init_cfg)
        a = self.resolve_arch(arch)
        depths, dims, topks = tuple(a['depths']), list(a['dims']), tuple(a['topks'])
        if not len(depths) == len(dims) == len(topks) == 4:
            raise ValueError(f'BiFormer: depths {depths}, dims {dims} and topks {topks} must '
                             'each have 4 entries (one per stage)')
        self.arch = a
        self.n_win = int(a['n_win'] if n_win is None else n_win)
        if self.n_win < 1:
            raise ValueError(f'BiFormer: n_win must be >= 1, got {self.n_win}')
        self.num_features = dims
        self.strides = [4, 8, 16, 32]
        self._check_out_indices(4)
        dpr_max = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        dpr = drop_path_schedule(depths, dpr_max)

        self.patch_embed = PatchEmbed(in_channels, dims[0])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            # [Downsample] -> BiFormerBlock x depth; stage 0 has no downsample
            self.stages.append(Stage(
                Downsample(dims[i - 1], dims[i]) if i > 0 else None,
                [BiFormerBlock(dims[i], dpr[i][j], topk=topks[i], n_win=self.n_win,
                               head_dim=a['head_dim'], qk_scale=qk_scale,
                               mlp_ratio=a['mlp_ratio'], side_dwconv=a['side_dwconv'],
                               layer_scale_init_value=a['layer_scale_init_value'],
                               routed_impl=routed_impl, routed_chunk=routed_chunk)
                 for j in range(depth)], with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm2d(dims[i], eps=1e-6))

        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module):
        # as upstream: trunc_normal(0.02) linear weights, zero biases, unit LayerNorm
        init_linear_and_norm(m)

    def forward_stages(self, x):
        return self.stage_outputs(self.patch_embed(x))

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_biformer_checkpoint(state_dict, model)

    @staticmethod
    def detect_checkpoint_variant(state_dict):
        return detect_biformer_variant(state_dict)


# ------------------------------------------------------------- converter
_STEM = {'0': 'conv1', '1': 'norm1', '3': 'conv2', '4': 'norm2'}
_DOWN = {'0': 'conv', '1': 'norm'}
_BLOCK_RULES = [
    (re.compile(r'^attn\.qkv\.qkv\.'), 'attn.qkv.'),  # BRA's QKVLinear
    (re.compile(r'^attn\.wo\.'), 'attn.proj.'),
    (re.compile(r'^mlp\.0\.'), 'mlp.fc1.'),  # Sequential(Linear, Identity, GELU, Linear)
    (re.compile(r'^mlp\.3\.'), 'mlp.fc2.'),
]
_UP_DOWNSAMPLE = re.compile(r'^downsample_layers\.(\d+)\.(\d+)\.(.*)$')
_UP_BLOCK = re.compile(r'^stages\.(\d+)\.(\d+)\.(.*)$')
_UP_EXTRA_NORM = re.compile(r'^extra_norms\.(\d+)\.(.*)$')
_UP_DROP = re.compile(r'^(head|norm|pre_logits)\.')


def convert_biformer_checkpoint(state_dict: Dict[str, torch.Tensor],
                                model: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """Map upstream BiFormer keys onto :class:`BiFormer`'s.

    Accepts the classification model (``downsample_layers.*``,
    ``stages.i.j.*``, final BN ``norm.*`` and ``head.*``, both dropped) and
    the mmdet/mmseg ``BiFormer_mm`` backbone (same trunk plus
    ``extra_norms.i`` -> our ``norm{i}``), prefix already stripped.  Pure
    function: keys already in our layout pass through unchanged; ``model`` is
    accepted for the loader's signature and not needed.
    """
    out = {}
    for key, value in state_dict.items():
        if _UP_DROP.match(key):
            continue
        m = _UP_DOWNSAMPLE.match(key)
        if m:
            stage, idx, rest = int(m.group(1)), m.group(2), m.group(3)
            part = (_STEM if stage == 0 else _DOWN).get(idx)
            if part is None:  # e.g. a positional-encoding layer appended upstream
                out[key] = value
            elif stage == 0:
                out[f'patch_embed.{part}.{rest}'] = value
            else:
                out[f'stages.{stage}.downsample.{part}.{rest}'] = value
            continue
        m = _UP_BLOCK.match(key)
        if m:
            rest = rename_first_match(m.group(3), _BLOCK_RULES)
            out[f'stages.{m.group(1)}.blocks.{m.group(2)}.{rest}'] = value
            continue
        m = _UP_EXTRA_NORM.match(key)
        if m:
            out[f'norm{m.group(1)}.{m.group(2)}'] = value
            continue
        out[key] = value
    return out


# ------------------------------------------------------------- variants
_VARIANT_BLOCK = re.compile(r'^stages\.(\d+)\.(?:blocks\.)?(\d+)\.(.+)$')


def detect_biformer_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[dict]:
    """BiFormer's size from a checkpoint's keys and shapes (upstream's
    ``stages.i.j`` or our ``stages.i.blocks.j``): widths (``norm1``), depths,
    MLP ratio; None for weights that are not BiFormer's."""
    blocks = blocks_by_stage(state_dict, _VARIANT_BLOCK)
    first = blocks.get(0, {}).get(0, {})
    if 'pos_embed.weight' not in first or 'norm1.weight' not in first:
        return None
    widths = first_block_widths(blocks, 'norm1.weight')
    if widths is None:
        return None
    fc1 = first.get('mlp.fc1.weight', first.get('mlp.0.weight'))
    depths = stage_depths(blocks)
    params = dict(dims=tuple(widths) if depths else None, depths=depths,
                  mlp_ratio=round(fc1.shape[0] / widths[0], 4) if fc1 is not None else None)
    upstream = any(k.startswith('downsample_layers.') for k in state_dict)
    return variant_info('BiFormer', BiFormer.arch_zoo, params, variant='biformer',
                        layout='upstream layout' if upstream else "this package's layout",
                        labels={'tiny': 'BiFormer-T', 'small': 'BiFormer-S',
                                'base': 'BiFormer-B'})
