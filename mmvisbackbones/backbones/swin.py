"""Swin Transformer (Liu et al. 2021) on the common feature contract.

Faithful to the detection/segmentation form of ``microsoft/Swin-Transformer``
(and mmdet's / mmseg's ``SwinTransformer``): non-overlapping 4x4 patch embed +
LayerNorm, window attention with a learned relative position bias, every
second block shifted by ``window_size // 2`` with the -100 attention mask,
patch merging (2x2 concat -> LayerNorm -> linear 4C -> 2C).  Any input size:
the image is zero-padded (bottom/right) to a multiple of 4, each block pads
its normalised input to window multiples and crops back, patch merging pads
odd maps, so output ``i`` is ``ceil(H / 4 / 2**i)``.  Structure:

    WindowAttention, SwinBlock, PatchMerging, PatchEmbed (blocks)
    -> SwinStage -> Swin (model) + arch table
    + convert_swin_checkpoint (official / mmdet / timm key layouts -> ours)

Tokens are channel-last ``(B, H, W, C)`` inside the model (as upstream);
outputs are NCHW.  Stage ``i >= 1`` *starts* with the patch merging that
upstream keeps at the end of stage ``i - 1`` (``layers.{i-1}.downsample``),
so that stage ``i``'s output has stride ``4 * 2**i``.
"""
import re
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_

from ..layers import (DropPath, Mlp, Stage, drop_path_schedule, init_linear_and_norm,
                      pad_to_multiple, resize_pos_embed)
from ..registry import register_backbone
from ..utils.checkpoint import (blocks_by_stage, rename_first_match, stage_depths, stage_widths,
                                variant_info)
from .base import BaseBackbone

#: value upstream adds to the logits of token pairs from different sub-windows
SHIFT_MASK_VALUE = -100.0


# ------------------------------------------------------------------ helpers
def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window_size`` -> (B * nW, ws * ws, C),
    windows in row-major order within each image."""
    B, H, W, C = x.shape
    ws = window_size
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    ws = window_size
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def relative_position_index(window_size: int, device=None) -> torch.Tensor:
    """(ws*ws, ws*ws) index into the ((2ws-1)^2, nH) bias table: entry (i, j)
    is ``(dy + ws - 1) * (2ws - 1) + (dx + ws - 1)`` for the offset
    ``(dy, dx) = pos_i - pos_j`` (upstream's layout of the table)."""
    ws = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(ws, device=device),
                                        torch.arange(ws, device=device), indexing='ij'))
    coords = coords.flatten(1)                                   # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)     # 2, N, N in [0, 2ws-2]
    return rel[0] * (2 * ws - 1) + rel[1]


def shifted_window_mask(H: int, W: int, window_size: int, shift_size: int,
                        device=None) -> torch.Tensor:
    """(nW, N, N) additive attention mask for the cyclically shifted (padded)
    ``H x W`` map: 0 for token pairs from the same sub-window, -100 otherwise
    (upstream's values)."""
    ws, s = window_size, shift_size
    region = torch.zeros(1, H, W, 1, device=device)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            region[:, hs, wsl, :] = cnt
            cnt += 1
    ids = window_partition(region, ws).squeeze(-1)               # nW, N
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK_VALUE)


def resize_relative_position_bias_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Bicubic resize of a ((2w-1)^2, nH) bias table to ``window_size``, as
    upstream's ``load_pretrained`` and mmdet/mmseg do (align_corners=False;
    computed in fp32)."""
    L = table.shape[0]
    src = int(round(L**0.5))
    if src * src != L:
        raise ValueError(f'relative position bias table of shape {tuple(table.shape)} is not '
                         'a square grid ((2*window-1)^2, num_heads)')
    dst = 2 * window_size - 1
    # the table is a (2w-1) x (2w-1) grid of num_heads-channel entries
    return resize_pos_embed(table.unsqueeze(0), (src, src), (dst, dst))[0]


# ------------------------------------------------------------------- blocks
class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows with a learned
    relative position bias (W-MSA / SW-MSA)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'Swin: dim {dim} is not divisible by num_heads {num_heads}')
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (dim // num_heads)**-0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1)**2, num_heads))
        # derived from window_size: not saved (upstream's checkpoints carry it;
        # the converter drops it)
        self.register_buffer('relative_position_index', relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def relative_position_bias(self) -> torch.Tensor:
        N = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(N, N, self.num_heads).permute(2, 0, 1)   # nH, N, N

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B * nW, N, C) windows; mask: None or (nW, N, N) additive."""
        B_, N, C = x.shape
        nH = self.num_heads
        q, k, v = self.qkv(x).view(B_, N, 3, nH, C // nH).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias().unsqueeze(0)          # 1, nH, N, N
        if mask is not None:
            # fold the windows into the head axis so that the (window, head)
            # bias broadcasts over the batch: (B, nW * nH, N, d)
            nW = mask.shape[0]
            bias = (bias + mask.unsqueeze(1).to(bias.dtype)).reshape(1, nW * nH, N, N)
            q, k, v = (t.reshape(B_ // nW, nW * nH, N, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale)
        out = out.reshape(B_, nH, N, -1).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}'


class SwinBlock(nn.Module):
    """x + DropPath((S)W-MSA(norm1(x))); x + DropPath(MLP(norm2(x))) on
    (B, H, W, C) tokens of any H, W (padded to window multiples inside)."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: bool = False,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, qk_scale,
                                    attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None):
        """x: (B, H, W, C); attn_mask: the (nW, N, N) mask of the padded map,
        used by shifted blocks only."""
        B, H, W, C = x.shape
        ws, s = self.window_size, self.shift_size
        # as upstream: zeros after norm1, attended to unmasked
        h = pad_to_multiple(self.norm1(x), ws, channels_last=True)
        Hp, Wp = h.shape[1:3]
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        h = self.attn(window_partition(h, ws), attn_mask if s else None)
        h = window_reverse(h, ws, Hp, Wp)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        if torch.jit.is_tracing() or (Hp, Wp) != (H, W):  # traced: crop by traced sizes
            h = h[:, :H, :W, :]
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (upstream's x0, x1, x2, x3 order: (0,0),
    (1,0), (0,1), (1,1) as (row, col) offsets) -> LayerNorm(4C) -> linear
    4C -> 2C without bias.  Odd maps are zero-padded bottom/right first, so
    n -> ceil(n / 2)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_dim)
        self.reduction = nn.Linear(4 * in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, 2, channels_last=True)
        B, H, W, C = x.shape
        # (B, h, dr, w, dc, C) -> (B, h, w, dc, dr, C): channel block dc * 2 + dr
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5)
        x = x.reshape(B, H // 2, W // 2, 4 * C)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv + LayerNorm -> (B, H/4, W/4, C)
    channel-last; the image is zero-padded bottom/right to a multiple of the
    patch size (as upstream's detection code)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int = 4, patch_norm: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, self.patch_size)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinStage(Stage):
    """[PatchMerging] -> SwinBlock x depth (odd blocks shifted).  Stage 0 has
    no merging.  The shifted-window mask is built once per forward for the
    padded map size."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window_size: int,
                 drop_paths: Sequence[float], downsample: bool, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop: float = 0.0,
                 attn_drop: float = 0.0, with_cp: bool = False):
        super().__init__(
            PatchMerging(in_dim, dim) if downsample else None,
            [SwinBlock(dim, num_heads, window_size, shift=j % 2 == 1, mlp_ratio=mlp_ratio,
                       qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                       drop_path=drop_paths[j]) for j in range(depth)], with_cp)
        self.window_size = window_size

    def block_args(self, x: torch.Tensor) -> tuple:
        """The shifted-window mask of the padded map (None when no block is
        shifted)."""
        if len(self.blocks) < 2:
            return (None, )
        ws = self.window_size
        H, W = x.shape[1:3]
        return (shifted_window_mask(H + (-H) % ws, W + (-W) % ws, ws, ws // 2, x.device), )


# -------------------------------------------------------------------- model
@register_backbone
class Swin(BaseBackbone):
    """Swin Transformer backbone for detection and segmentation.

    Not named ``SwinTransformer``: mmdet and mmseg register that name, and
    inside their scopes their class would shadow this one.

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'`` (window 7, ImageNet-1k 224
            weights), ``'base_384'`` (window 12, for the 384x384 weights
            ``swin_base_patch4_window12_384*.pth``), ``'test'`` (a tiny arch
            for unit tests), or a dict with ``depths``, ``dims`` (int: doubled
            per stage, or a list), ``num_heads`` and optionally
            ``window_size`` (7), ``drop_path_rate`` (0.1).
        window_size: overrides the arch's window; a checkpoint trained with
            another window is loaded with bicubically resized bias tables.
        drop_path_rate: stochastic depth at the last block, growing linearly
            from 0 (None: the arch's, upstream's ImageNet value).
        mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, patch_norm:
            as upstream.
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`BaseBackbone`.
            ``frozen_stages=k`` freezes the patch embed and stages ``0..k-1``
            (stage ``i >= 1`` begins with its patch merging).
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts the
            official classification checkpoints (``model`` key), mmdet/mmseg
            ``SwinTransformer`` checkpoints (``backbone.`` prefix or bare) and
            this plugin's.
    """
    model_name = 'swin'
    channels_last_stages = True  # (B, H, W, C) tokens between stages
    #: parameter counts upstream reports (classification model, head included)
    upstream_params = {'tiny': '28M', 'small': '50M', 'base': '88M', 'base_384': '88M'}
    arch_zoo = {
        'tiny': dict(depths=(2, 2, 6, 2), dims=96, num_heads=(3, 6, 12, 24), window_size=7,
                     drop_path_rate=0.2),
        'small': dict(depths=(2, 2, 18, 2), dims=96, num_heads=(3, 6, 12, 24), window_size=7,
                      drop_path_rate=0.3),
        'base': dict(depths=(2, 2, 18, 2), dims=128, num_heads=(4, 8, 16, 32), window_size=7,
                     drop_path_rate=0.5),
        'base_384': dict(depths=(2, 2, 18, 2), dims=128, num_heads=(4, 8, 16, 32),
                         window_size=12, drop_path_rate=0.5),
        'test': dict(depths=(1, 1, 2, 1), dims=16, num_heads=(1, 1, 2, 2), window_size=7,
                     drop_path_rate=0.1),
    }
    _arch_defaults = dict(window_size=7, drop_path_rate=0.1)

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 window_size: Optional[int] = None,
                 drop_path_rate: Optional[float] = None,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 patch_size: int = 4,
                 patch_norm: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, in_channels=in_channels,
                         init_cfg=init_cfg)
        if isinstance(arch, dict):
            arch = dict(self._arch_defaults, **arch)
        a = self.resolve_arch(arch)
        depths = tuple(a['depths'])
        dims = a['dims']
        dims = [int(dims * 2**i) for i in range(len(depths))] if isinstance(dims, int) \
            else list(dims)
        heads = list(a['num_heads'])
        if not len(dims) == len(heads) == len(depths):
            raise ValueError(f'Swin: {len(depths)} depths, {len(dims)} dims and {len(heads)} '
                             'num_heads must have the same length')
        ws = int(a['window_size'] if window_size is None else window_size)
        if ws < 2:
            raise ValueError(f'Swin: window_size must be >= 2, got {ws}')
        self.arch = a
        self.window_size = ws
        self.num_features = dims
        self.strides = [patch_size * 2**i for i in range(len(depths))]
        self._check_out_indices(len(depths))
        dpr_max = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        dpr = drop_path_schedule(depths, dpr_max)

        self.patch_embed = PatchEmbed(in_channels, dims[0], patch_size, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.stages.append(
                SwinStage(dims[max(i - 1, 0)], dims[i], depth, heads[i], ws,
                          dpr[i], downsample=i > 0, mlp_ratio=mlp_ratio,
                          qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                          attn_drop=attn_drop_rate, with_cp=with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))

        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module):
        # as upstream: trunc_normal(0.02) for linear layers and bias tables,
        # unit LayerNorm; the patch-embed conv keeps PyTorch's default.
        init_linear_and_norm(m)
        if isinstance(m, WindowAttention):
            trunc_normal_(m.relative_position_bias_table, std=0.02)

    def forward_stages(self, x):
        return self.stage_outputs(self.pos_drop(self.patch_embed(x)))

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_swin_checkpoint(state_dict, model)

    @staticmethod
    def detect_checkpoint_variant(state_dict):
        return detect_swin_variant(state_dict)


# ------------------------------------------------------------- converter
_DROP = re.compile(r'(^head\.|^norm\.|relative_position_index$|attn_mask$)')
_BLOCK = re.compile(r'^(?:layers|stages)\.(\d+)\.blocks\.(\d+)\.(.*)$')
_DOWN = re.compile(r'^(?:layers|stages)\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)$')
_MMDET_BLOCK_PARTS = [(re.compile(r'^attn\.w_msa\.'), 'attn.'),
                      (re.compile(r'^ffn\.layers\.0\.0\.'), 'mlp.fc1.'),
                      (re.compile(r'^ffn\.layers\.1\.'), 'mlp.fc2.')]
# mmdet/mmseg's PatchMerging gathers the 2x2 neighbourhood with nn.Unfold:
# channel c * 4 + (dr * 2 + dc).  Upstream (and ours) concatenate x0..x3:
# channel (dc * 2 + dr) * C + c.  Both position orders are [0, 2, 1, 3] of
# each other (a self-inverse permutation).
_UNFOLD_TO_CONCAT = [0, 2, 1, 3]


def _unfold_to_concat(t: torch.Tensor) -> torch.Tensor:
    """Last-axis channels from nn.Unfold's (C, 4) order to upstream's (4, C)."""
    C4 = t.shape[-1]
    t = t.reshape(*t.shape[:-1], C4 // 4, 4).transpose(-1, -2)[..., _UNFOLD_TO_CONCAT, :]
    return t.reshape(*t.shape[:-2], C4)


def detect_swin_layout(state_dict: Dict[str, torch.Tensor]) -> str:
    """``'official'`` (microsoft/Swin-Transformer: ``layers.i``, merging at
    the end of layer i), ``'timm'`` (``layers.i``, merging at the start of
    layer i), ``'mmdet'`` (mmdet/mmseg ``SwinTransformer``: ``stages.i``,
    ``w_msa``, ``ffn``, unfold merging at the end of stage i) or ``'ours'``."""
    keys = list(state_dict)
    upstream = any(k.startswith('layers.') for k in keys)
    mm = any('.attn.w_msa.' in k or '.ffn.layers.' in k or k.startswith('patch_embed.projection.')
             for k in keys)
    if upstream and mm:
        raise ValueError('Swin checkpoint mixes the official (layers.*) and mmdet/mmseg '
                         '(stages.*.w_msa / ffn) key layouts; cannot convert it')
    if mm:
        return 'mmdet'
    if upstream:
        down = {int(m.group(1)) for m in map(_DOWN.match, keys) if m}
        # official: layers 0..n-2 end with a merging; timm: layers 1..n-1 start with one
        return 'timm' if down and 0 not in down else 'official'
    return 'ours'


def convert_swin_checkpoint(state_dict: Dict[str, torch.Tensor],
                            model: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """Map a Swin checkpoint (prefix already stripped) onto :class:`Swin`'s keys.

    Accepts the official classification checkpoints, mmdet/mmseg
    ``SwinTransformer`` state dicts (their unfold-ordered patch merging is
    permuted back to upstream's order), timm's layout, and our own (passed
    through).  The classifier ``head``, the final classification ``norm``
    and the derived buffers (``relative_position_index``, ``attn_mask``) are
    dropped.  With ``model`` given, relative position bias tables of another
    window size are resized bicubically to the model's.  Pure function.
    """
    layout = detect_swin_layout(state_dict)
    out = {}
    for key, value in state_dict.items():
        if _DROP.search(key):
            continue
        new = key
        m = _DOWN.match(key)
        if m and layout in ('official', 'mmdet'):   # merging ends stage i -> starts i+1
            stage, part, kind = int(m.group(1)), m.group(2), m.group(3)
            new = f'stages.{stage + 1}.downsample.{part}.{kind}'
            if layout == 'mmdet':
                value = _unfold_to_concat(value)
        elif m:                                       # timm: already at the start
            new = f'stages.{m.group(1)}.downsample.{m.group(2)}.{m.group(3)}'
        elif key.startswith('patch_embed.projection.'):
            new = 'patch_embed.proj.' + key[len('patch_embed.projection.'):]
        else:
            b = _BLOCK.match(key)
            if b and layout != 'ours':
                rest = b.group(3)
                if layout == 'mmdet':
                    rest = rename_first_match(rest, _MMDET_BLOCK_PARTS)
                new = f'stages.{b.group(1)}.blocks.{b.group(2)}.{rest}'
        out[new] = value
    if model is not None:
        own = model.state_dict()
        for key, value in out.items():
            if key.endswith('relative_position_bias_table') and key in own \
                    and own[key].shape != value.shape and own[key].shape[1] == value.shape[1]:
                ws = int(round((own[key].shape[0]**0.5 + 1) / 2))
                out[key] = resize_relative_position_bias_table(value, ws)
    return out


# ------------------------------------------------------------- variants
_VARIANT_BLOCK = re.compile(r'^(?:layers|stages)\.(\d+)\.blocks\.(\d+)\.(.+)$')
#: upstream's sizes by (stage-0 width, depths)
_UPSTREAM_NAMES = {(96, (2, 2, 6, 2)): 'Swin-T', (96, (2, 2, 18, 2)): 'Swin-S',
                   (128, (2, 2, 18, 2)): 'Swin-B', (192, (2, 2, 18, 2)): 'Swin-L'}
_LAYOUT_WORDS = {'official': 'official layout', 'timm': 'timm layout',
                 'mmdet': 'mmdet/mmseg layout', 'ours': "this package's layout"}


def detect_swin_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[dict]:
    """The Swin variant and size of a checkpoint from its keys and shapes
    (official / timm / mmdet / our layouts, see :func:`detect_swin_layout`);
    None for weights that are not Swin's.

    Sizes: widths (``norm1``), depths (blocks per stage), heads (the columns
    of ``relative_position_bias_table``), compared with the model; the window
    size ((rows + 1) / 2 of the (2w-1)^2-row table) is reported only, since
    the converter resizes the tables to the model's window.  Swin V2
    checkpoints (cosine attention: ``logit_scale``, ``cpb_mlp``) are another
    block design, not convertible."""
    blocks = blocks_by_stage(state_dict, _VARIANT_BLOCK)
    first = blocks.get(0, {}).get(0)
    if not first:
        return None
    table = first.get('attn.relative_position_bias_table',
                      first.get('attn.w_msa.relative_position_bias_table'))
    v2 = 'attn.logit_scale' in first or any(r.startswith('attn.cpb_mlp.') for r in first)
    if (table is None or table.dim() != 2) and not v2:
        return None
    try:
        layout = detect_swin_layout(state_dict)
    except ValueError:  # mixed layouts: the converter says so
        return None
    widths, heads = [], []
    for i in sorted(blocks):
        blk = blocks[i][min(blocks[i])]
        norm = blk.get('norm1.weight')
        t = blk.get('attn.logit_scale') if v2 else blk.get(
            'attn.relative_position_bias_table', blk.get('attn.w_msa.relative_position_bias_table'))
        if norm is None or t is None or t.dim() < 1:
            return None
        widths.append(norm.shape[0])
        heads.append(t.shape[0] if v2 else t.shape[1])
    depths = stage_depths(blocks)
    window = None
    if not v2:
        w = (table.shape[0]**0.5 + 1) / 2
        window = int(w) if w == int(w) else None
    params = dict(depths=depths, dims=stage_widths(widths) if depths else None,
                  num_heads=tuple(heads) if depths else None)
    label = _UPSTREAM_NAMES.get((widths[0], depths))
    words = _LAYOUT_WORDS[layout]
    if v2:
        label = (label or 'Swin').replace('Swin', 'Swin V2')
        words += ', cosine attention (logit_scale, cpb_mlp)'
    return variant_info('Swin', Swin.arch_zoo, params, variant='v2' if v2 else 'v1',
                        layout=words, label=label, extra=dict(window_size=window),
                        convertible=not v2, model_layout='Swin V1 (relative position bias)',
                        hint=None if not v2 else (
                            'this Swin implements Swin V1 (learned relative position bias '
                            'tables); use swin_{tiny,small,base}_patch4_window7_224.pth or '
                            'their mmdet / mmseg checkpoints'))
