"""PlainMamba (Yang et al., BMVC 2024) on the common feature contract.

Faithful to ChenhongyiYang/PlainMamba's released L1 / L2 / L3 models:

* a convolutional patch embedding: a 7x7 stride-2 conv (64 channels, BN,
  ReLU), ``num_convs`` 3x3 convs (BN, ReLU), zero padding bottom / right to
  a multiple of 8 (mmcv's ``AdaptivePadding``, 'corner') and an 8x8 stride-8
  projection: stride 16 in all;
* an absolute position embedding stored for the 14x14 grid of 224 inputs,
  resized (bicubic) to the token grid;
* ``depth`` identical blocks ``x + DropPath(mixer(LN(x)))``, in the blocks
  named by ``layers_with_dwconv`` (L1: the first) followed by a 3x3
  depthwise conv, BN and GELU on the whole residual stream;
* the mixer: ``in_proj`` to ``x, z``; a 7x7 depthwise conv + SiLU on the
  ``x`` map; ``x_proj`` / ``dt_proj`` for delta, B, C as Mamba; then four
  selective scans of the *continuous 2-D* (snake) orders -- rows
  alternating right / left from the top, the same reversed, columns
  alternating down / up from the left, the same reversed -- each adding to
  B a learned *direction* vector (``direction_Bs``: start, right, left, up,
  down) for the step that led to the token; the four outputs, put back in
  token order, are summed, gated by ``SiLU(z)`` and projected out.

As upstream computes it (its checkpoints were trained that way, so this port
keeps it): only the scanned input ``u`` is put in a scan's order -- delta, B
and C of step ``t`` are those of token ``t`` in row-major order -- and
``dt_proj``'s bias is added twice (in ``dt_proj`` and as the scan's
``delta_bias``).
The four scans are one :func:`mmvisbackbones.ops.selective_scan` call (four
groups of channels; Triton on CUDA, the chunked PyTorch scan on the CPU).

Outputs: the token state after each quarter of the blocks, through its own
LayerNorm (eps 1e-6; the last one is upstream's final norm ``ln1``, the
others its ``norm_layer{i}``), then ViTDet's simple feature pyramid to
strides 4 / 8 / 16 / 32, or four stride-16 maps (``pyramid='none'``, as
upstream's UperNet recipe).  Upstream's detection recipe wraps the model in
a ViT-Adapter (``type='ViTAdapter', backbone=dict(type='PlainMamba', ...)``).

Structure: ConvPatchEmbed, snake_orders, PlainMambaMixer -> PlainMambaBlock
-> four stages (PlainBackbone) -> PlainMamba, the arch table, and
:func:`convert_plain_mamba_checkpoint` for upstream checkpoints.
"""
import math
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import DropPath, init_linear_and_norm, pad_to_multiple
from ..ops import selective_scan
from ..registry import register_backbone
from .plain import PlainBackbone, convert_layer_key, convert_square_pos_embed
from .vim import _dt_bias_init

#: direction codes of ``direction_Bs`` rows (upstream's order)
START, RIGHT, LEFT, UP, DOWN = range(5)
NUM_ORDERS = 4


class ConvPatchEmbed(nn.Module):
    """Upstream's convolutional patch embedding (stride ``patch_size``).

    Module names follow upstream (``stem``, ``convs``, ``projection``)."""

    def __init__(self, in_channels: int, dim: int, num_convs: int = 1, patch_size: int = 16,
                 stem_channels: int = 64):
        super().__init__()
        if patch_size % 2:
            raise ValueError(f'ConvPatchEmbed: patch_size must be even, got {patch_size}')
        c = stem_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        layers = []
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers) if layers else None
        self.proj_size = patch_size // 2
        self.projection = nn.Conv2d(c, dim, self.proj_size, stride=self.proj_size)

    def forward(self, x):
        x = self.stem(x)
        if self.convs is not None:
            x = self.convs(x)
        x = self.projection(pad_to_multiple(x, self.proj_size))
        return x.flatten(2).transpose(1, 2), x.shape[-2:]


def snake_orders(H, W, device=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The four continuous 2-D scan orders of an ``H x W`` grid.

    Returns ``(order, position, direction)``, each ``(4, H * W)`` long:
    ``order[k, t]`` the row-major index of the token scan ``k`` visits at
    step ``t``; ``position[k, i]`` the step at which it visits token ``i``
    (the inverse permutation); ``direction[k, t]`` the code of the move that
    led to step ``t`` (:data:`START` at ``t = 0``, then RIGHT, LEFT, UP or
    DOWN).  Orders: 0 rows from the top, row ``i`` rightwards if ``i`` is
    even; 1 the reverse of 0; 2 columns from the left, column ``j``
    downwards if ``j`` is even; 3 the reverse of 2 -- upstream's
    ``get_permute_order``, here in tensor arithmetic so that a traced graph
    keeps ``H`` and ``W`` dynamic."""
    L = H * W
    t = torch.arange(L, device=device)
    # order 0 is its own inverse: token (i, j) <-> step i*W + (j or W-1-j)
    i, j = t // W, t % W
    row_snake = i * W + torch.where(i % 2 == 0, j, W - 1 - j)
    # order 2: step t = c*H + r visits (r or H-1-r, c); its inverse
    c, r = t // H, t % H
    col_order = torch.where(c % 2 == 0, r, H - 1 - r) * W + c
    col_pos = j * H + torch.where(j % 2 == 0, i, H - 1 - i)
    order = torch.stack([row_snake, row_snake.flip(0), col_order, col_order.flip(0)])
    position = torch.stack([row_snake, L - 1 - row_snake, col_pos, L - 1 - col_pos])
    step = order[:, 1:] - order[:, :-1]
    # test the vertical moves first: with W == 1 a move down is also +1
    moves = torch.where(step == W, DOWN, torch.where(
        step == -W, UP, torch.where(step == 1, RIGHT, LEFT)))
    direction = torch.cat([torch.full_like(order[:, :1], START), moves], 1)
    return order, position, direction


class PlainMambaMixer(nn.Module):
    """Upstream's ``PlainMamba2D`` on (B, L, C) tokens of an (H, W) grid.

    Parameter names follow upstream, so checkpoints map one to one."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2,
                 dt_rank: Union[int, str] = 'auto', conv_size: int = 7, conv_bias: bool = True,
                 bias: bool = True):
        super().__init__()
        if conv_size % 2 != 1:
            raise ValueError(f'PlainMambaMixer: conv_size must be odd, got {conv_size}')
        self.d_inner = E = int(expand * d_model)
        self.d_state = d_state
        self.dt_rank = R = math.ceil(d_model / 16) if dt_rank == 'auto' else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias)
        self.conv2d = nn.Conv2d(E, E, conv_size, padding=conv_size // 2, groups=E,
                                bias=conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        std = R**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_dt_bias_init(E))
        self.dt_proj.bias._no_reinit = True
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(E))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(E, d_model, bias=bias)
        self.direction_Bs = nn.Parameter(torch.zeros(NUM_ORDERS + 1, d_state))
        nn.init.trunc_normal_(self.direction_Bs, std=0.02)
        self.direction_Bs._no_weight_decay = True

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        Bt, L, _ = x.shape
        H, W = hw
        E, N, K = self.d_inner, self.d_state, NUM_ORDERS
        xz = self.in_proj(x)
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.transpose(1, 2).reshape(Bt, E, H, W))).flatten(2)  # (Bt, E, L)
        dt, Bm, Cm = F.linear(x.transpose(1, 2), self.x_proj.weight).split(
            [self.dt_rank, N, N], dim=-1)
        # upstream adds dt_proj's bias twice: in dt_proj and as the scan's delta_bias
        dt = self.dt_proj(dt).transpose(1, 2)  # (Bt, E, L)
        order, position, direction = snake_orders(H, W, x.device)
        # the inputs in each scan's order, the four scans as four channel groups
        u = x.index_select(2, order.flatten()).view(Bt, E, K, L).transpose(1, 2)
        Bs = Bm.transpose(1, 2).unsqueeze(1) + \
            self.direction_Bs[direction].transpose(1, 2).to(Bm.dtype)  # (Bt, K, N, L)
        Cs = Cm.transpose(1, 2).unsqueeze(1).expand(Bt, K, N, L)
        y = selective_scan(
            u.reshape(Bt, K * E, L), dt.repeat(1, K, 1),
            (-torch.exp(self.A_log.float())).repeat(K, 1), Bs, Cs,
            D=self.D.float().repeat(K), delta_bias=self.dt_proj.bias.float().repeat(K),
            delta_softplus=True)
        # each scan's output back in token order, summed
        y = y.view(Bt, K, E, L).gather(
            3, position.view(1, K, 1, L).expand(Bt, K, E, L)).sum(1)
        return self.out_proj(y.transpose(1, 2) * F.silu(z))


class PlainMambaBlock(nn.Module):
    """``x + DropPath(mixer(LN(x)))``, then (``with_dwconv``) a 3x3
    depthwise conv, BN and GELU on the (B, L, C) stream as a map."""

    def __init__(self, dim: int, drop_path: float = 0.0, with_dwconv: bool = False,
                 mixer_cfg: Optional[dict] = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = PlainMambaMixer(dim, **(mixer_cfg or {}))
        self.drop_path = DropPath(drop_path)
        self.dw = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False),
                                nn.BatchNorm2d(dim), nn.GELU()) if with_dwconv else None

    def forward(self, x, hw):
        x = x + self.drop_path(self.mamba(self.norm(x), hw))
        if self.dw is not None:
            B, L, C = x.shape
            x = self.dw(x.transpose(1, 2).reshape(B, C, *hw)).flatten(2).transpose(1, 2)
        return x


@register_backbone
class PlainMamba(PlainBackbone):
    """PlainMamba backbone with a simple feature pyramid (strides 4-32).

    Args:
        arch: 'l1' (192, 24 layers), 'l2' (384, 24), 'l3' (448, 36); 'test'
            (tiny, for unit tests); or a dict with the same keys.
        pretrain_img_size: image size the position embedding is stored for
            (224 -> a 14x14 grid), resized to the token grid at run time.
        pyramid: 'sfp' (strides 4 / 8 / 16 / 32) or 'none' (four stride-16
            maps, upstream's UperNet recipe).
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate,
        init_cfg: the common contract.  ``init_cfg=dict(type='Pretrained',
            checkpoint=...)`` accepts upstream's checkpoints (the released
            classification ``l1.pth`` .. ``l3.pth`` and its segmentation
            weights, ``backbone.`` keys); its detection weights belong to
            the adapter (:class:`ViTAdapter` around this model).
    """
    model_name = 'plainmamba'
    upstream_params = {'l1': '7.3M', 'l2': '25.7M', 'l3': '50.5M'}
    # upstream's classification model: the trunk and its final norm (our
    # norm3), an average pool and a linear head
    dense_only_prefixes = ('fpns.', )

    @classmethod
    def classification_head_params(cls, channels, arch):
        # the published sizes are the backbone's: upstream's code gives
        # 7,358,656 / 25,760,832 / 50,507,456 parameters for L1 / L2 / L3
        # with the final norm and without the 1000-class head
        # (tests/test_plain_mamba.py against upstream's own count)
        return 0

    _mixer = dict(d_state=16, expand=2, conv_size=7)
    arch_zoo = {
        'l1': dict(embed_dims=192, depth=24, num_convs_patch_embed=1, layers_with_dwconv=(0, ),
                   drop_path_rate=0.1, **_mixer),
        'l2': dict(embed_dims=384, depth=24, num_convs_patch_embed=2, layers_with_dwconv=(),
                   drop_path_rate=0.2, **_mixer),
        'l3': dict(embed_dims=448, depth=36, num_convs_patch_embed=2, layers_with_dwconv=(),
                   drop_path_rate=0.3, **_mixer),
        'test': dict(embed_dims=32, depth=4, num_convs_patch_embed=1, layers_with_dwconv=(0, ),
                     drop_path_rate=0.1, d_state=4, expand=2, conv_size=3),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'l1',
                 in_channels: int = 3,
                 pretrain_img_size: int = 224,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: Optional[float] = None,
                 pyramid: str = 'sfp',
                 sfp_norm: str = 'ln2d',
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        a = self.resolve_arch(arch)
        dim = a['embed_dims']
        super().__init__(dim, a['depth'], in_channels=in_channels, patch_size=16,
                         pretrain_img_size=pretrain_img_size, out_indices=out_indices,
                         out_norm='ln', out_norm_eps=1e-6, sfp_norm=sfp_norm, pyramid=pyramid,
                         frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg, patch_embed=ConvPatchEmbed(
                             in_channels, dim, a['num_convs_patch_embed'], 16))
        self.arch = a
        dwconv = set(a['layers_with_dwconv'])
        bad = sorted(i for i in dwconv if not 0 <= i < a['depth'])
        if bad:
            raise ValueError(f'PlainMamba: layers_with_dwconv {bad} outside the '
                             f'{a["depth"]} layers')
        mixer_cfg = dict(d_state=a['d_state'], expand=a['expand'], conv_size=a['conv_size'])
        dpr = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        self.build_stages(
            lambda i, dp: PlainMambaBlock(dim, dp, i in dwconv, mixer_cfg), dpr)
        # upstream's classification config: truncated-normal linears, unit
        # LayerNorms (dt_proj's bias keeps Mamba's init)
        self.apply(init_linear_and_norm)
        self._freeze_stages()

    def run_block(self, block, x, hw):
        return block(x, hw)

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_plain_mamba_checkpoint(state_dict, model)


_NORM_LAYER = re.compile(r'^norm_layer(\d+)\.(.*)$')
_DROP = re.compile(r'^(head\.|neck\.)')


def convert_plain_mamba_checkpoint(state_dict: Dict[str, torch.Tensor],
                                   model: Optional[PlainMamba] = None
                                   ) -> Dict[str, torch.Tensor]:
    """Map an upstream ChenhongyiYang/PlainMamba checkpoint onto :class:`PlainMamba`.

    * ``layers.{i}.*`` -> ``stages.{i // per}.{i % per}.*`` (per = depth / 4);
    * the final norm (mmcv's name ``ln1``) -> ``norm3`` (our last output's
      norm), and a
      segmentation model's ``norm_layer{i}`` (the norm of the output after
      layer ``i``) -> ``norm{s}`` of the stage ``s`` that layer ``i`` ends;
      a ``norm_layer`` after a layer that ends no stage is an error;
    * ``pos_embed`` is resized to the model's pre-training grid;
    * the classifier (``head.``, ``neck.``) is dropped; the output norms of
      outputs the model does not return are dropped.
    A checkpoint in our layout (``stages.`` keys) passes through.  Needs
    ``model`` for the depth and the grid size.  (The loader strips the
    ``backbone.`` prefix of upstream's mmcls / mmseg checkpoints.)
    """
    if model is None:
        raise ValueError('convert_plain_mamba_checkpoint needs the model (depth, grid size)')
    per = model.depth // model.num_stages
    if any(k.startswith('stages.') for k in state_dict):
        return dict(state_dict)  # ours
    out = {}
    for k, v in state_dict.items():
        if _DROP.match(k):
            continue
        stage_key, n = convert_layer_key(k, model), _NORM_LAYER.match(k)
        if stage_key:
            out[stage_key] = v
        elif n:
            i = int(n.group(1))
            if (i + 1) % per:
                raise ValueError(
                    f'convert_plain_mamba_checkpoint: {k!r} normalises the output after layer '
                    f'{i}, which ends none of the model\'s stages (every {per} layers: '
                    f'{[per * s + per - 1 for s in range(model.num_stages)]})')
            if (i + 1) // per - 1 in model.out_indices:
                out[f'norm{(i + 1) // per - 1}.{n.group(2)}'] = v
        elif k.startswith('ln1.'):
            if model.num_stages - 1 in model.out_indices:
                out[f'norm{model.num_stages - 1}.' + k[len('ln1.'):]] = v
        elif k == 'pos_embed':
            out[k] = convert_square_pos_embed(v, model, 'PlainMamba')
        else:
            out[k] = v
    return out
