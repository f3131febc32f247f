"""PVTv2 (Pyramid Vision Transformer v2, Wang et al. 2022) on the common feature contract.

Faithful to the released ``whai362/PVT`` v2 models (``classification/pvt_v2.py``,
``detection/pvt_v2.py``): overlapping patch embeddings (7x7 stride 4, then
3x3 stride 2, each conv + LayerNorm), spatial-reduction attention (keys and
values from a ``sr_ratio`` x ``sr_ratio`` strided conv + LayerNorm, or for the
linear ``b2_li`` an adaptive average pool to 7x7 + 1x1 conv + LayerNorm +
GELU), a feed-forward network with a 3x3 depthwise conv between its two
linear layers (ReLU after ``fc1`` in the linear variant), and a LayerNorm at
the end of every stage.  Upstream's LayerNorm eps are kept: 1e-6 for the
block and stage norms, PyTorch's default 1e-5 for the patch-embed and
spatial-reduction norms (mmdet's re-implementation uses 1e-6 for all).

Structure:

    SRAttention, MixFFN (blocks) -> PVTv2Block -> PVTv2Stage -> PVTv2 (model)
    + arch table + convert_pvtv2_checkpoint (official / mmdet layouts -> ours)

Mapping onto the feature contract: the stem is upstream's first patch embed
(``patch_embed``); stage ``i >= 1`` starts with upstream's patch embed
``i + 1`` as its ``downsample``.  Upstream's stage norm ``norm{i+1}`` both
produces the stage's feature map and feeds the next stage, so it lives
inside the stage (``stages.i.norm``) and *is* output ``i``'s norm; freezing
stage ``i`` (``frozen_stages > i``) therefore freezes it too.

Sizes: a k x k conv with stride s and padding k // 2 (k = 7, s = 4 and k = 3,
s = 2) maps ``n -> ceil(n / s)``, so output ``i`` of any ``H x W`` input is
``ceil(H / stride_i) x ceil(W / stride_i)`` without extra padding.  The
spatial-reduction conv (kernel = stride = sr_ratio, no padding) sees at least
``sr_ratio`` rows and columns for any ``H, W >= 32``.
"""
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import DropPath, Mlp, Stage, drop_path_schedule, init_linear_and_norm, run_blocks
from ..registry import register_backbone
from ..utils.checkpoint import blocks_by_stage, stage_depths, variant_info
from .base import BaseBackbone

#: LayerNorm eps of upstream's blocks and stage norms (``partial(nn.LayerNorm, eps=1e-6)``)
BLOCK_NORM_EPS = 1e-6
#: LayerNorm eps of upstream's patch-embed and spatial-reduction norms (``nn.LayerNorm(dim)``)
DEFAULT_NORM_EPS = 1e-5

HW = Tuple[int, int]


def _tokens_to_map(x: torch.Tensor, hw: HW) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W), a channels-last view of contiguous tokens.

    Built as ``reshape(B, H, W, C).permute(0, 3, 1, 2)`` so that the strides are
    exactly channels-last's, ``(H*W*C, 1, W*C, C)``, whatever ``B``.  The
    equivalent ``transpose(1, 2).reshape(B, C, H, W)`` gives batch 1 the batch
    stride ``C``: PyTorch then does not recognise the map as channels-last, and
    a convolution on it (the depthwise conv of :class:`MixFFN`, the
    spatial-reduction conv) first copies it to NCHW and runs the much slower
    NCHW kernel (the 3x3 depthwise conv of stage 2 at 512x512: ~40 ms against
    ~2 ms on the 2-core CPU), and the tokens after it are no longer contiguous
    (a second copy before ``fc2``).  Same values; only the memory layout the
    kernels pick differs.
    """
    B, _, C = x.shape
    return x.reshape(B, hw[0], hw[1], C).permute(0, 3, 1, 2)


class OverlapPatchEmbed(nn.Module):
    """k x k conv with stride s and padding k // 2, then LayerNorm on the tokens.

    Returns ``(tokens (B, H'*W', C), (H', W'))`` with ``H' = ceil(H / s)``.
    """

    def __init__(self, in_channels: int, dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size, stride=stride,
                              padding=kernel_size // 2)
        self.norm = nn.LayerNorm(dim, eps=DEFAULT_NORM_EPS)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, HW]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class SRAttention(nn.Module):
    """Spatial-reduction attention on (B, N, C) tokens.

    Queries from every token; keys and values from a reduced map:
    ``sr`` (conv, kernel = stride = sr_ratio) + ``norm`` when ``sr_ratio > 1``,
    the tokens themselves when ``sr_ratio == 1``, or (``linear=True``) an
    adaptive average pool to ``pool_size`` x ``pool_size`` + 1x1 ``sr`` conv +
    ``norm`` + GELU whatever the sr_ratio.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, sr_ratio: int = 1,
                 linear: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 pool_size: int = 7):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'SRAttention: dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.sr_ratio = int(sr_ratio)
        self.linear = bool(linear)
        self.attn_drop = float(attn_drop)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()
        if self.linear:
            self.pool = nn.AdaptiveAvgPool2d(pool_size)
            self.sr = nn.Conv2d(dim, dim, kernel_size=1)
            self.norm = nn.LayerNorm(dim, eps=DEFAULT_NORM_EPS)
            self.act = nn.GELU()
        elif self.sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=self.sr_ratio, stride=self.sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=DEFAULT_NORM_EPS)

    def reduce(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        """Tokens the keys and values are computed from."""
        if self.linear:
            x = self.sr(self.pool(_tokens_to_map(x, hw))).flatten(2).transpose(1, 2)
            return self.act(self.norm(x))
        if self.sr_ratio > 1:
            x = self.sr(_tokens_to_map(x, hw)).flatten(2).transpose(1, 2)
            return self.norm(x)
        return x

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, C // h).transpose(1, 2)                 # B h N d
        k, v = self.kv(self.reduce(x, hw)).reshape(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(d)) v, upstream's scale; fused kernel where available
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class MixFFN(Mlp):
    """PVTv2's feed-forward network: fc1 -> [ReLU if linear] -> 3x3 depthwise
    conv -> GELU -> drop -> fc2 -> drop, on (B, N, C) tokens."""

    def __init__(self, dim: int, hidden: int, linear: bool = False, drop: float = 0.0):
        super().__init__(dim, hidden, act_layer=nn.GELU, drop=drop)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.relu = nn.ReLU() if linear else nn.Identity()

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        x = self.relu(self.fc1(x))
        x = self.dwconv(_tokens_to_map(x, hw)).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(self.drop(self.act(x))))


class PVTv2Block(nn.Module):
    """x + DropPath(SRAttention(norm1(x))); x + DropPath(MixFFN(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 linear: bool = False, qkv_bias: bool = True, drop_path: float = 0.0,
                 drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = SRAttention(dim, num_heads, qkv_bias=qkv_bias, sr_ratio=sr_ratio,
                                linear=linear, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), linear=linear, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


class PVTv2Stage(Stage):
    """[downsample: 3x3 stride-2 overlapping patch embed] -> blocks -> norm.

    Takes and returns NCHW maps; stage 0 has no downsample (the model's stem
    is its patch embed).  ``norm`` is upstream's stage norm: it makes the
    stage's output, which is also the next stage's input.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 sr_ratio: int, drop_paths: Sequence[float], downsample: bool,
                 linear: bool = False, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, with_cp: bool = False):
        super().__init__(
            OverlapPatchEmbed(in_dim, dim, 3, 2) if downsample else None,
            [PVTv2Block(dim, num_heads, mlp_ratio, sr_ratio, linear=linear, qkv_bias=qkv_bias,
                        drop_path=drop_paths[j], drop=drop, attn_drop=attn_drop)
             for j in range(depth)], with_cp)
        self.norm = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x, hw = self.downsample(x)
        else:
            hw = (x.shape[2], x.shape[3])
            x = x.flatten(2).transpose(1, 2)
        x = run_blocks(self.blocks, x, hw, with_cp=self.with_cp)
        return _tokens_to_map(self.norm(x), hw).contiguous()


class _Stem(OverlapPatchEmbed):
    """Stage 0's 7x7 stride-4 patch embed, returning an NCHW map."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__(in_channels, dim, 7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = super().forward(x)
        return _tokens_to_map(x, hw)


@register_backbone
class PVTv2(BaseBackbone):
    """PVTv2 backbone for detection and segmentation.

    Args:
        arch: ``'b0'`` ... ``'b5'``, ``'b2_li'`` (linear spatial reduction),
            ``'test'`` (a tiny arch for unit tests), or a dict with the keys
            of :attr:`arch_zoo` entries.
        out_indices: stages whose outputs are returned (strides 4, 8, 16, 32).
        drop_path_rate: stochastic depth at the last block (None: the arch's,
            0.1 as in upstream's detection models).
        drop_rate, attn_drop_rate: dropout after projections / on the
            attention weights (upstream: 0).
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`BaseBackbone`.
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts the
            official ``whai362/PVT`` v2 checkpoints (classification, or its
            mmdet 2.x detectors), mmdet's ``PyramidVisionTransformerV2``
            checkpoints and this plugin's own.

    Output ``i`` is stage ``i``'s map after upstream's stage norm
    (``stages.i.norm``).  Stages after the last of ``out_indices`` are not run.
    """
    model_name = 'pvtv2'
    #: parameter counts upstream reports (classification models, head included)
    upstream_params = {'b0': '3.7M', 'b1': '14.0M', 'b2': '25.4M', 'b2_li': '22.6M',
                       'b3': '45.2M', 'b4': '62.6M', 'b5': '82.0M'}
    _heads = (1, 2, 5, 8)
    _sr = (8, 4, 2, 1)
    # upstream's classification models; drop_path_rate 0.1 as upstream's
    # detection backbones use for every arch (its ImageNet runs: 0.1 for
    # b0-b2_li, 0.3 for b3-b5)
    arch_zoo = {
        'b0': dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), num_heads=_heads,
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=_sr, linear=False, drop_path_rate=0.1),
        'b1': dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), num_heads=_heads,
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=_sr, linear=False, drop_path_rate=0.1),
        'b2': dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), num_heads=_heads,
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=_sr, linear=False, drop_path_rate=0.1),
        'b2_li': dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), num_heads=_heads,
                      mlp_ratios=(8, 8, 4, 4), sr_ratios=_sr, linear=True, drop_path_rate=0.1),
        'b3': dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3), num_heads=_heads,
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=_sr, linear=False, drop_path_rate=0.1),
        'b4': dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3), num_heads=_heads,
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=_sr, linear=False, drop_path_rate=0.1),
        'b5': dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), num_heads=_heads,
                   mlp_ratios=(4, 4, 4, 4), sr_ratios=_sr, linear=False, drop_path_rate=0.1),
        'test': dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4),
                     mlp_ratios=(2, 2, 2, 2), sr_ratios=_sr, linear=False, drop_path_rate=0.1),
    }
    del _heads, _sr

    def __init__(self,
                 arch: Union[str, dict] = 'b2',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: Optional[float] = None,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 qkv_bias: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, in_channels=in_channels,
                         init_cfg=init_cfg)
        a = self.resolve_arch(arch)
        depths = tuple(a['depths'])
        n_st = len(depths)
        for key in ('embed_dims', 'num_heads', 'mlp_ratios', 'sr_ratios'):
            if len(a[key]) != n_st:
                raise ValueError(f'PVTv2: {key} has {len(a[key])} entries for {n_st} stages '
                                 f'(depths {depths})')
        if n_st != 4:
            raise ValueError(f'PVTv2: 4 stages (strides 4/8/16/32) expected, got depths {depths}')
        dims = [int(d) for d in a['embed_dims']]
        self.arch = a
        self.num_features = dims
        self.strides = [4 * 2**i for i in range(n_st)]
        self._check_out_indices(n_st)
        dpr_max = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        dpr = drop_path_schedule(depths, dpr_max)

        self.patch_embed = _Stem(in_channels, dims[0])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.stages.append(
                PVTv2Stage(dims[max(i - 1, 0)], dims[i], depth, a['num_heads'][i],
                           a['mlp_ratios'][i], a['sr_ratios'][i], dpr[i],
                           downsample=i > 0, linear=a['linear'], qkv_bias=qkv_bias,
                           drop=drop_rate, attn_drop=attn_drop_rate, with_cp=with_cp))

        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module):
        # upstream's _init_weights: trunc_normal(0.02) linears, unit LayerNorms,
        # conv weights N(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups
        init_linear_and_norm(m)
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out)**0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_stages(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages[:max(self.out_indices) + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_pvtv2_checkpoint(state_dict, model)

    @staticmethod
    def detect_checkpoint_variant(state_dict):
        return detect_pvtv2_variant(state_dict)


# ------------------------------------------------------------- converter
# official whai362/PVT v2 layout (classification, or its mmdet 2.x backbones)
_OFF_EMBED = re.compile(r'^patch_embed(\d+)\.(.*)$')
_OFF_BLOCK = re.compile(r'^block(\d+)\.(\d+)\.(.*)$')
_OFF_NORM = re.compile(r'^norm(\d+)\.(.*)$')
_OFF_DROP = re.compile(r'^head\.')
# mmdet 3.x PyramidVisionTransformerV2 layout
_MM_EMBED = re.compile(r'^layers\.(\d+)\.0\.(projection|norm)\.(.*)$')
_MM_BLOCK = re.compile(r'^layers\.(\d+)\.1\.(\d+)\.(.*)$')
_MM_NORM = re.compile(r'^layers\.(\d+)\.2\.(.*)$')
_MM_FFN = {'0': 'fc1', '1': 'dwconv', '4': 'fc2'}
_POS_EMBED = re.compile(r'(^|\.)pos_embed\d*($|\.)')


def _embed_key(stage: int, rest: str) -> str:
    return f'patch_embed.{rest}' if stage == 0 else f'stages.{stage}.downsample.{rest}'


def _mmdet_block(prefix: str, rest: str, value: torch.Tensor, out: dict):
    """One mmdet PVTEncoderLayer entry -> our block entries (written into ``out``)."""
    if rest in ('attn.attn.in_proj_weight', 'attn.attn.in_proj_bias'):
        # nn.MultiheadAttention packs [q; k; v]; upstream has q and kv = [k; v]
        dim = value.shape[0] // 3
        kind = rest.rsplit('_', 1)[1]
        out[f'{prefix}attn.q.{kind}'] = value[:dim]
        out[f'{prefix}attn.kv.{kind}'] = value[dim:]
        return
    if rest.startswith('attn.attn.out_proj.'):
        out[prefix + 'attn.proj.' + rest[len('attn.attn.out_proj.'):]] = value
        return
    m = re.match(r'^ffn\.layers\.(\d+)\.(weight|bias)$', rest)
    if m and m.group(1) in _MM_FFN:
        name = _MM_FFN[m.group(1)]
        if name in ('fc1', 'fc2') and m.group(2) == 'weight':
            value = value.reshape(value.shape[0], value.shape[1])  # 1x1 conv -> linear
        out[f'{prefix}mlp.{name}.{m.group(2)}'] = value
        return
    out[prefix + rest] = value  # norm1 / norm2 / attn.sr / attn.norm: same names


def convert_pvtv2_checkpoint(state_dict: Dict[str, torch.Tensor],
                             model: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """Map PVTv2 weights onto :class:`PVTv2`'s keys (prefix already stripped).

    Accepts, key by key:

    * the official ``whai362/PVT`` v2 layout (``patch_embed{1-4}``,
      ``block{1-4}.{j}``, ``norm{1-4}``, ``head``): classification
      checkpoints and its mmdet 2.x detection backbones;
    * mmdet's ``PyramidVisionTransformerV2`` (``layers.{i}.0`` patch embed,
      ``layers.{i}.1.{j}`` blocks with ``nn.MultiheadAttention``'s packed
      ``in_proj``, ``ffn.layers.{0,1,4}`` 1x1 / depthwise convs,
      ``layers.{i}.2`` stage norm);
    * our own layout, passed through unchanged.

    The classification head is dropped; keys of no known layout are kept as
    they are (the loader reports them as unexpected).  Pure function:
    ``model`` is accepted for the converter interface and not used.

    Raises ``ValueError`` for PVT v1 checkpoints (absolute position
    embeddings), a different architecture.
    """
    pos = [k for k in state_dict if _POS_EMBED.search(k)]
    if pos:
        raise ValueError(
            f'this looks like a PVT (v1) checkpoint: it has absolute position embeddings '
            f'({pos[:3]}); PVTv2 has none. Use a PVTv2 checkpoint (pvt_v2_b*.pth).')
    out = {}
    for key, value in state_dict.items():
        if _OFF_DROP.match(key):
            continue
        m = _OFF_EMBED.match(key)
        if m:
            out[_embed_key(int(m.group(1)) - 1, m.group(2))] = value
            continue
        m = _OFF_BLOCK.match(key)
        if m:
            rest = m.group(3).replace('mlp.dwconv.dwconv.', 'mlp.dwconv.')
            out[f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.{rest}'] = value
            continue
        m = _OFF_NORM.match(key)
        if m:
            out[f'stages.{int(m.group(1)) - 1}.norm.{m.group(2)}'] = value
            continue
        m = _MM_EMBED.match(key)
        if m:
            part = 'proj' if m.group(2) == 'projection' else 'norm'
            out[_embed_key(int(m.group(1)), f'{part}.{m.group(3)}')] = value
            continue
        m = _MM_BLOCK.match(key)
        if m:
            _mmdet_block(f'stages.{m.group(1)}.blocks.{m.group(2)}.', m.group(3), value, out)
            continue
        m = _MM_NORM.match(key)
        if m:
            out[f'stages.{m.group(1)}.norm.{m.group(2)}'] = value
            continue
        out[key] = value
    return out


# ------------------------------------------------------------- variants
_VARIANT_LAYOUTS = [  # (block key pattern, number of the first stage in the keys, layout)
    (re.compile(r'^block(\d+)\.(\d+)\.(.+)$'), 1, 'official layout'),
    (re.compile(r'^layers\.(\d+)\.1\.(\d+)\.(.+)$'), 0, 'mmdet layout'),
    (re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.(.+)$'), 0, "this package's layout"),
]
_FC1 = ('mlp.fc1.weight', 'ffn.layers.0.weight')  # official / ours, mmdet (a 1x1 conv)


def detect_pvtv2_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[dict]:
    """The PVT variant and size of a checkpoint from its keys and shapes
    (official whai362/PVT, mmdet or our layout); None for weights that are
    not PVT's.

    Reads the widths (``norm1``), depths, MLP ratios (``fc1`` rows / width)
    and the spatial reduction: a strided ``attn.sr`` conv of kernel
    ``sr_ratio`` (none where the ratio is 1) for b0-b5, a 1x1 ``attn.sr``
    after the 7x7 average pool in every stage for the linear ``b2_li``
    (``linear=True``).  PVT v1 (absolute position embeddings ``pos_embed1..4``)
    is another architecture, not convertible."""
    for pattern, first_stage, layout in _VARIANT_LAYOUTS:
        blocks = blocks_by_stage(state_dict, pattern, first_stage)
        first = blocks.get(0, {}).get(0, {})
        if 'norm1.weight' in first and ('attn.q.weight' in first or 'attn.kv.weight' in first
                                        or 'attn.attn.in_proj_weight' in first):
            break
    else:
        return None
    dims, ratios, srs, has_sr = [], [], [], []
    for i in sorted(blocks):
        blk = blocks[i][min(blocks[i])]
        norm = blk.get('norm1.weight')
        fc1 = next((blk[k] for k in _FC1 if k in blk), None)
        if norm is None or fc1 is None:
            return None
        dims.append(norm.shape[0])
        ratios.append(round(fc1.shape[0] / norm.shape[0], 4))
        sr = blk.get('attn.sr.weight')
        srs.append(sr.shape[-1] if sr is not None and sr.dim() == 4 else 1)
        has_sr.append(sr is not None)
    depths = stage_depths(blocks)
    # a 1x1 sr conv (kernel 1 where a stage has one) is the linear variant's
    linear = any(k == 1 for k, present in zip(srs, has_sr) if present)
    v1 = any(_POS_EMBED.search(k) for k in state_dict)
    params = dict(embed_dims=tuple(dims) if depths else None, depths=depths,
                  mlp_ratios=tuple(ratios) if depths else None, linear=linear,
                  sr_ratios=tuple(srs) if depths and not linear else None)
    words = layout + (', linear spatial reduction (pool + 1x1 sr)' if linear else
                      ', strided spatial-reduction convs')
    if v1:
        words += ', absolute position embeddings (PVT v1)'
    return variant_info(
        'PVTv2', PVTv2.arch_zoo, params, variant='v1' if v1 else ('linear' if linear else 'sr'),
        layout=words, label='PVT v1' if v1 else None,
        labels={k: f'PVTv2-{k} (pvt_v2_{k})' for k in PVTv2.arch_zoo if k != 'test'},
        convertible=not v1, model_layout='PVTv2 (overlapping patch embeds, no pos_embed)',
        hint=None if not v1 else 'PVTv2 has no absolute position embeddings; use a PVTv2 '
        'checkpoint (pvt_v2_b*.pth)')
