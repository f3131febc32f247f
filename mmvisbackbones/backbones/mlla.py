"""MLLA (Mamba-Like Linear Attention), Han et al., "Demystify Mamba in Vision:
A Linear Attention Perspective" (NeurIPS 2024), on the common feature contract.

Faithful to the released ``LeapLabTHU/MLLA`` models (classification
``models/mlla.py`` and the mmdet/mmseg backbone of ``downstream/``).  Structure:

    rope_tables / apply_rope / LinearAttention (blocks) -> MLLABlock
    -> MLLAStage ([PatchMerging] + blocks) -> MLLA (model) + arch table
    + convert_mlla_checkpoint (upstream key layout -> ours)

Block: ``x += cpe1(x)``; ``x += DropPath(out_proj(LinAttn(SiLU(dwc(in_proj(n)))) *
SiLU(act_proj(n))))`` with ``n = norm1(x)``; ``x += cpe2(x)``;
``x += DropPath(MLP(norm2(x)))``.  The linear attention has elu+1 kernels,
RoPE on q and k in the numerator only, the normaliser ``q . mean(k)``, v = its
input, and a LePE depthwise conv on v.

Differences from upstream, on purpose:

* upstream's classification model stores a RoPE table for one resolution
  (a ``rotations`` buffer, 224 / 4 / 2**i); here the table is computed for
  the actual feature size (cached per size, device), as upstream's dense
  backbone does, so any input size works.  The buffers are dropped by the
  converter (they are not weights).
* channel-last ``(B, H, W, C)`` tokens inside the stages instead of
  ``(B, H*W, C)``; outputs NCHW.

Any input size: like upstream's dense backbone the stem pads the image
bottom/right to a multiple of 4 and each patch merging pads an odd map to
even, so output ``i`` is ``ceil(H / 2**(i+2))`` and the numbers equal
upstream's dense backbone at every size.
"""
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, Stage, drop_path_schedule, init_linear_and_norm,
                      pad_to_multiple)
from ..registry import register_backbone
from ..utils.checkpoint import (blocks_by_stage, first_block_widths, stage_depths, stage_widths,
                                variant_info)
from .base import BaseBackbone

ROPE_BASE = 10000

_ROPE_CACHE: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}
_ROPE_CACHE_SIZE = 64


def _rope_check_dim(dim: int):
    if dim % 4 != 0 or dim <= 0:
        raise ValueError(f'MLLA RoPE needs a channel count divisible by 4 (a quarter of the '
                         f'channel pairs per spatial axis), got {dim}')


def rope_tables(h: int, w: int, dim: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each ``(h, w, dim // 2)`` fp32, of MLLA's 2-D RoPE.

    Channel pairs ``(2p, 2p+1)`` rotate by ``row * theta_p`` for
    ``p < dim / 4`` and by ``col * theta_(p - dim/4)`` for the rest, with
    ``theta_j = base ** (-j / (dim / 4))`` (upstream's ``RoPE``/``rope``).
    Cached per ``(h, w, dim, device)``; always built outside inference mode so
    a table made during inference can serve training later.  While tracing
    (ONNX export) the tables are computed in the graph from the traced
    ``h, w`` and not cached: cached tables would be constants of the export
    size.
    """
    device = torch.device(device) if device is not None else torch.device('cpu')
    if torch.jit.is_tracing():
        return _rope_angles(h, w, int(dim), device)
    _rope_check_dim(dim)
    key = (int(h), int(w), int(dim), str(device))
    hit = _ROPE_CACHE.get(key)
    if hit is not None:
        return hit
    with torch.inference_mode(False), torch.no_grad():
        tables = _rope_angles(h, w, dim, device)
    if len(_ROPE_CACHE) >= _ROPE_CACHE_SIZE:
        _ROPE_CACHE.clear()
    _ROPE_CACHE[key] = tables
    return tables


def _rope_angles(h, w, dim: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    k_max = dim // 4
    theta = 1 / (ROPE_BASE**(torch.arange(k_max, device=device) / k_max))  # fp32
    rows = torch.arange(h, device=device).unsqueeze(-1) * theta  # (h, k_max)
    cols = torch.arange(w, device=device).unsqueeze(-1) * theta  # (w, k_max)
    angles = torch.cat([rows[:, None, :].expand(h, w, k_max),
                        cols[None, :, :].expand(h, w, k_max)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x (B, H, W, C)`` by MLLA's 2-D RoPE (in fp32,
    as upstream); returns ``x``'s dtype."""
    B, H, W, C = x.shape
    cos, sin = rope_tables(H, W, C, x.device)
    pairs = x.float().reshape(B, H, W, C // 2, 2)
    re_, im_ = pairs[..., 0], pairs[..., 1]
    out = torch.stack([re_ * cos - im_ * sin, im_ * cos + re_ * sin], dim=-1)
    return out.flatten(-2).to(x.dtype)


class LinearAttention(nn.Module):
    """Non-causal multi-head linear attention with LePE and RoPE.

    ``q, k = elu(qk(x)) + 1``, ``v = x``; per head
    ``out = RoPE(q) @ (RoPE(k)^T v / n) / (q . mean(k) + 1e-6) + LePE(v)``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'MLLA: dim {dim} is not divisible by num_heads {num_heads}')
        _rope_check_dim(dim)
        self.dim = dim
        self.num_heads = num_heads
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        B, H, W, C = x.shape
        n, nh = H * W, self.num_heads
        q, k = (F.elu(self.qk(x)) + 1.0).chunk(2, dim=-1)

        def heads(t):  # (B, H, W, C) -> (B, nh, n, C // nh)
            return t.reshape(B, n, nh, C // nh).transpose(1, 2)

        q_rope, k_rope = heads(apply_rope(q)), heads(apply_rope(k))
        q, k, v = heads(q), heads(k), heads(x)
        # normaliser without RoPE, in fp32: 1 / (q . mean_n(k))
        z = 1.0 / ((q.float() * k.float().mean(dim=2, keepdim=True)).sum(-1, keepdim=True)
                   + 1e-6)
        scale = n**-0.5
        kv = (k_rope.transpose(-2, -1) * scale) @ (v * scale)  # (B, nh, d, d)
        out = ((q_rope @ kv) * z).to(x.dtype)
        out = out.transpose(1, 2).reshape(B, H, W, C)
        return out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}'


def _dwconv_cl(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A depthwise conv applied to a channel-last (B, H, W, C) map."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MLLABlock(nn.Module):
    """cpe1 -> [norm1 -> in_proj -> dwc -> SiLU -> LinearAttention, gated by
    SiLU(act_proj), out_proj] -> cpe2 -> [norm2 -> MLP], on (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0):
        super().__init__()
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, dim)
        self.act_proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = nn.SiLU()
        self.attn = LinearAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path)
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + _dwconv_cl(self.cpe1, x)
        y = self.norm1(x)
        gate = self.act(self.act_proj(y))
        y = self.act(_dwconv_cl(self.dwc, self.in_proj(y)))
        y = self.out_proj(self.attn(y) * gate)
        x = x + self.drop_path(y)
        x = x + _dwconv_cl(self.cpe2, x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvNormAct(nn.Module):
    """conv -> [BatchNorm] -> [ReLU]; attribute names as upstream's ``ConvLayer``
    so that checkpoint keys match (``conv.*``, ``norm.*``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = True, norm: bool = True,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups,
                              bias=bias)
        self.norm = nn.BatchNorm2d(out_ch) if norm else None
        self.act = nn.ReLU() if act else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class Stem(nn.Module):
    """Stride-4 conv stem: conv3x3/2 -> residual (conv3x3, conv3x3) ->
    conv3x3/2 (to 4C) -> conv1x1 (to C), BatchNorm throughout.

    Pads the image bottom/right to a multiple of 4 first, as upstream's dense
    backbone, so an ``H x W`` image gives ``ceil(H/4) x ceil(W/4)`` tokens.
    Returns channel-last ``(B, H/4, W/4, C)``.
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        half = dim // 2
        self.conv1 = ConvNormAct(in_channels, half, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Sequential(
            ConvNormAct(half, half, 3, padding=1, bias=False),
            ConvNormAct(half, half, 3, padding=1, bias=False, act=False))
        self.conv3 = nn.Sequential(
            ConvNormAct(half, dim * 4, 3, stride=2, padding=1, bias=False),
            ConvNormAct(dim * 4, dim, 1, bias=False, act=False))

    def forward(self, x):
        x = self.conv1(pad_to_multiple(x, 4))
        x = self.conv2(x) + x
        return self.conv3(x).permute(0, 2, 3, 1)


class PatchMerging(nn.Module):
    """Inverted-bottleneck downsampling C -> 2C: conv1x1 (to 8C) + ReLU ->
    depthwise conv3x3/2 + ReLU -> conv1x1 (to 2C) + BatchNorm.

    An odd map is padded bottom/right to even first (as upstream's dense
    backbone), giving ``ceil(H/2) x ceil(W/2)``.  Channel-last in and out.
    """

    def __init__(self, dim: int, out_dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(out_dim * ratio)
        self.conv = nn.Sequential(
            ConvNormAct(dim, hidden, 1, norm=False),
            ConvNormAct(hidden, hidden, 3, stride=2, padding=1, groups=hidden, norm=False),
            ConvNormAct(hidden, out_dim, 1, act=False))

    def forward(self, x):
        x = pad_to_multiple(x, 2, channels_last=True)
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@register_backbone
class MLLA(BaseBackbone):
    """MLLA backbone for detection and segmentation.

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'`` (upstream's MLLA-T/S/B),
            ``'test'`` (a tiny arch for unit tests), or a dict with the keys
            of :attr:`arch_zoo` entries (``embed_dims``, ``depths``,
            ``num_heads``, ``mlp_ratio``, ``qkv_bias``, ``drop_path_rate``).
        out_indices: stages whose outputs are returned (strides 4, 8, 16, 32),
            each through a LayerNorm ``norm{i}`` (as upstream's dense backbone).
        drop_path_rate: stochastic depth at the last block (None: the arch's,
            i.e. upstream's ImageNet value; upstream's Mask R-CNN configs use 0.1).
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`BaseBackbone`.
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts the
            released classification checkpoints (``model`` key) and mmdet /
            mmseg checkpoints of upstream or of this plugin.
    """
    model_name = 'mlla'
    channels_last_stages = True  # (B, H, W, C) tokens between stages
    #: parameter counts upstream reports (classification model, head included)
    upstream_params = {'tiny': '25M', 'small': '43M', 'base': '96M'}
    arch_zoo = {
        # cfgs/mlla_t.yaml, mlla_s.yaml, mlla_b.yaml
        'tiny': dict(embed_dims=64, depths=(2, 4, 8, 4), num_heads=(2, 4, 8, 16),
                     mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.2),
        'small': dict(embed_dims=64, depths=(3, 6, 21, 6), num_heads=(2, 4, 8, 16),
                      mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.3),
        'base': dict(embed_dims=96, depths=(3, 6, 21, 6), num_heads=(3, 6, 12, 24),
                     mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.5),
        'test': dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                     mlp_ratio=2.0, qkv_bias=True, drop_path_rate=0.1),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: Optional[float] = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, in_channels=in_channels,
                         init_cfg=init_cfg)
        a = self.resolve_arch(arch)
        depths = tuple(int(d) for d in a['depths'])
        heads = tuple(int(h) for h in a['num_heads'])
        if len(heads) != len(depths):
            raise ValueError(f'MLLA: {len(heads)} num_heads for {len(depths)} stages')
        dims = [int(a['embed_dims']) * 2**i for i in range(len(depths))]
        for d, h in zip(dims, heads):
            if d % h:
                raise ValueError(f'MLLA: stage width {d} is not divisible by its {h} heads')
            _rope_check_dim(d)
        self.arch = a
        self.num_features = dims
        self.strides = [4 * 2**i for i in range(len(depths))]
        self._check_out_indices(len(depths))
        dpr_max = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        dpr = drop_path_schedule(depths, dpr_max)

        self.patch_embed = Stem(in_channels, dims[0])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            # [PatchMerging] -> MLLABlock x depth on (B, H, W, C); stage 0 has no
            # merging: upstream's layers.i.downsample (ending stage i) is our
            # stages.{i+1}.downsample
            self.stages.append(Stage(
                PatchMerging(dims[i - 1], dims[i]) if i > 0 else None,
                [MLLABlock(dims[i], heads[i], float(a['mlp_ratio']), bool(a['qkv_bias']),
                           dpr[i][j]) for j in range(depth)], with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))

        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module):
        # as upstream: trunc_normal(0.02) linear weights, zero biases, unit
        # LayerNorm; convolutions and BatchNorm keep PyTorch's defaults.
        init_linear_and_norm(m)

    def forward_stages(self, x):
        return self.stage_outputs(self.patch_embed(x))

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_mlla_checkpoint(state_dict, model)

    @staticmethod
    def detect_checkpoint_variant(state_dict):
        return detect_mlla_variant(state_dict)


# ------------------------------------------------------------- converter
# not weights: upstream's fixed-resolution RoPE tables, the classifier and
# its final norm (our norm3 is the dense backbone's output norm)
_UPSTREAM_DROP = re.compile(r'^(head\.|norm\.)|\.attn\.rope\.rotations$')
_LAYER = re.compile(r'^layers\.(\d+)\.(blocks|downsample)\.(.*)$')


def convert_mlla_checkpoint(state_dict: Dict[str, torch.Tensor],
                            model: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """Map upstream MLLA keys (classification ``MLLA`` of ``models/mlla.py`` or
    the mmdet/mmseg ``MLLA`` backbone of ``downstream/``, prefix already
    stripped) onto :class:`MLLA`'s.

    Pure function (``model`` is accepted for the common converter signature
    and not used).  ``layers.i.blocks`` -> ``stages.i.blocks``;
    ``layers.i.downsample`` (which ends stage i upstream) ->
    ``stages.{i+1}.downsample``; the stem and the dense backbone's
    ``norm{i}`` keep their names.  The classifier ``head``, the final
    ``norm`` and the ``attn.rope.rotations`` buffers are dropped; keys already
    in our layout pass through unchanged.
    """
    out = {}
    for key, value in state_dict.items():
        if _UPSTREAM_DROP.search(key):
            continue
        m = _LAYER.match(key)
        if m:
            i, part, rest = int(m.group(1)), m.group(2), m.group(3)
            stage = i if part == 'blocks' else i + 1
            key = f'stages.{stage}.{part}.{rest}'
        out[key] = value
    return out


# ------------------------------------------------------------- variants
_VARIANT_BLOCK = re.compile(r'^(?:layers|stages)\.(\d+)\.blocks\.(\d+)\.(.+)$')


def detect_mlla_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[dict]:
    """MLLA's size from a checkpoint's keys and shapes (upstream's
    ``layers.i.blocks.j`` or our ``stages.i.blocks.j``): widths (``norm1``),
    depths, MLP ratio, q/k bias; None for weights that are not MLLA's."""
    blocks = blocks_by_stage(state_dict, _VARIANT_BLOCK)
    first = blocks.get(0, {}).get(0, {})
    if 'act_proj.weight' not in first or 'cpe1.weight' not in first:
        return None
    widths = first_block_widths(blocks, 'norm1.weight')
    if widths is None:
        return None
    fc1 = first.get('mlp.fc1.weight')
    depths = stage_depths(blocks)
    params = dict(embed_dims=stage_widths(widths) if depths else None, depths=depths,
                  mlp_ratio=round(fc1.shape[0] / widths[0], 4) if fc1 is not None else None,
                  qkv_bias='attn.qk.bias' in first)
    upstream = any(k.startswith('layers.') for k in state_dict)
    return variant_info('MLLA', MLLA.arch_zoo, params, variant='mlla',
                        layout='upstream layout' if upstream else "this package's layout",
                        labels={'tiny': 'MLLA-T', 'small': 'MLLA-S', 'base': 'MLLA-B'})
