"""Vim (Vision Mamba, Zhu et al. 2024) on the common feature contract.

Faithful to hustvl/Vim's released "bimamba v2" models: 16x16 patch
embedding, absolute position embedding, an optional class token in the
middle of the sequence, pre-norm blocks with RMSNorm and a residual stream
kept in fp32, a bidirectional Mamba mixer, and the final RMSNorm (here the
norm of the last output; every output has its own RMSNorm).  The reversed direction has
its own conv1d, x_proj, dt_proj, A and D; both outputs are summed (and halved,
``if_divide_out``) before out_proj.

Upstream runs the reversed direction on a flipped copy of the sequence.
Here everything stays in natural order: a causal conv of the flipped
sequence, flipped back, is a right-padded conv with the kernel reversed, and
:func:`mmvisbackbones.ops.bidirectional_scan` walks direction 1 backwards
(one fused Triton kernel on CUDA).

Structure: VimMixer -> VimBlock -> four stages (PlainBackbone) -> Vim, the
arch table, and :func:`convert_vim_checkpoint` for upstream checkpoints.
"""
import math
import re
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_

from ..layers import DropPath, RMSNorm, init_linear_and_norm, resize_pos_embed
from ..ops import bidirectional_scan
from ..registry import register_backbone
from ..utils.checkpoint import plain_layers, variant_info
from .plain import PlainBackbone, convert_layer_key


def _dt_bias_init(d_inner, dt_min=0.001, dt_max=0.1, floor=1e-4):
    """Mamba's dt bias: softplus(bias) log-uniform in [dt_min, dt_max]."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class VimMixer(nn.Module):
    """Bidirectional Mamba mixer (bimamba v2) on (B, L, C) tokens.

    Parameter names follow mamba_ssm / Vim, so checkpoints map one to one.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = 'auto', conv_bias: bool = True, bias: bool = False,
                 if_divide_out: bool = True):
        super().__init__()
        self.d_inner = d_inner = int(expand * d_model)
        self.d_state = d_state
        self.d_conv = d_conv
        self.dt_rank = R = math.ceil(d_model / 16) if dt_rank == 'auto' else int(dt_rank)
        self.if_divide_out = if_divide_out
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        A_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
        for sfx in ('', '_b'):  # forward and reversed direction
            self.add_module('conv1d' + sfx, nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner,
                                                      padding=d_conv - 1, bias=conv_bias))
            self.add_module('x_proj' + sfx, nn.Linear(d_inner, R + 2 * d_state, bias=False))
            dt_proj = nn.Linear(R, d_inner, bias=True)
            std = R**-0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            with torch.no_grad():
                dt_proj.bias.copy_(_dt_bias_init(d_inner))
            dt_proj.bias._no_reinit = True
            self.add_module('dt_proj' + sfx, dt_proj)
            a = nn.Parameter(A_log.clone())
            a._no_weight_decay = True
            self.register_parameter('A_log' if not sfx else 'A_b_log', a)
            d = nn.Parameter(torch.ones(d_inner))
            d._no_weight_decay = True
            self.register_parameter('D' + sfx, d)

    def _branch(self, x, L, reverse: bool):
        """Conv + SiLU + projections of one direction, in natural order."""
        sfx = '_b' if reverse else ''
        conv = getattr(self, 'conv1d' + sfx)
        if reverse:  # = flip(causal_conv(flip(x))): right padding, reversed kernel
            x = F.conv1d(F.pad(x, (0, self.d_conv - 1)), conv.weight.flip(-1), conv.bias,
                         groups=self.d_inner)
        else:
            x = conv(x)[..., :L]
        x = F.silu(x)
        x_dbl = F.linear(x.transpose(1, 2), getattr(self, 'x_proj' + sfx).weight)  # (B, L, R+2N)
        dt, Bm, Cm = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, getattr(self, 'dt_proj' + sfx).weight).transpose(1, 2)  # (B, Di, L)
        return x, dt, Bm.transpose(1, 2), Cm.transpose(1, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        L = h.shape[1]
        xz = self.in_proj(h).transpose(1, 2)  # (B, 2Di, L)
        x, z = xz.chunk(2, dim=1)
        xf, dtf, Bf, Cf = self._branch(x, L, reverse=False)
        xb, dtb, Bb, Cb = self._branch(x, L, reverse=True)
        y = bidirectional_scan(
            torch.cat([xf, xb], 1), torch.cat([dtf, dtb], 1),
            -torch.exp(torch.cat([self.A_log, self.A_b_log], 0).float()),
            torch.stack([Bf, Bb], 1), torch.stack([Cf, Cb], 1),
            D=torch.cat([self.D, self.D_b]).float(), z=z,
            delta_bias=torch.cat([self.dt_proj.bias, self.dt_proj_b.bias]).float(),
            delta_softplus=True)
        if self.if_divide_out:
            y = y / 2
        return self.out_proj(y.transpose(1, 2))


class VimBlock(nn.Module):
    """x + DropPath(mixer(RMSNorm(x))), the residual stream in fp32 if asked.

    (Upstream's fused add+norm form -- add the previous mixer output, norm,
    mix -- computes the same sums.)"""

    def __init__(self, dim: int, drop_path: float = 0.0, residual_in_fp32: bool = True,
                 norm_eps: float = 1e-5, mixer_cfg: Optional[dict] = None):
        super().__init__()
        self.norm = RMSNorm(dim, eps=norm_eps)
        self.mixer = VimMixer(dim, **(mixer_cfg or {}))
        self.drop_path = DropPath(drop_path)
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, x):
        if self.residual_in_fp32:
            x = x.float()
        return x + self.drop_path(self.mixer(self.norm(x))).to(x.dtype)


@register_backbone
class Vim(PlainBackbone):
    """Vision Mamba backbone with a simple feature pyramid (strides 4-32).

    Args:
        arch: 'tiny' (192), 'small' (384), 'base' (768), 24 layers each;
            'test' (tiny, for unit tests); or a dict with the same keys.
        with_cls_token: keep upstream's class token in the middle of the
            sequence (as in ImageNet pre-training); upstream's segmentation
            backbone drops it (the default here).
        pretrain_img_size: image size the position embedding is stored for
            (224 -> a 14x14 grid), resized to the token grid at run time.
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate,
        init_cfg: the common contract (see BaseBackbone / PlainBackbone).
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts
            upstream Vim ImageNet checkpoints (``model`` key).
    """
    model_name = 'vim'
    upstream_params = {'tiny': '7M', 'small': '26M', 'base': '98M'}
    # upstream's classification model: middle class token, no pyramid; its
    # final norm_f is our norm3
    dense_only_prefixes = ('fpns.', )
    classification_kwargs = dict(with_cls_token=True)
    arch_zoo = {
        'tiny': dict(embed_dims=192, depth=24, d_state=16, expand=2, drop_path_rate=0.1),
        'small': dict(embed_dims=384, depth=24, d_state=16, expand=2, drop_path_rate=0.1),
        'base': dict(embed_dims=768, depth=24, d_state=16, expand=2, drop_path_rate=0.1),
        'test': dict(embed_dims=32, depth=4, d_state=4, expand=2, drop_path_rate=0.1),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 patch_size: int = 16,
                 pretrain_img_size: int = 224,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 with_cls_token: bool = False,
                 drop_path_rate: Optional[float] = None,
                 residual_in_fp32: bool = True,
                 if_divide_out: bool = True,
                 d_conv: int = 4,
                 sfp_norm: str = 'ln2d',
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        a = self.resolve_arch(arch)
        super().__init__(a['embed_dims'], a['depth'], in_channels=in_channels,
                         patch_size=patch_size, pretrain_img_size=pretrain_img_size,
                         out_indices=out_indices, out_norm='rms', sfp_norm=sfp_norm,
                         frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, init_cfg=init_cfg)
        self.arch = a
        self.with_cls_token = with_cls_token
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, a['embed_dims']))
            self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, a['embed_dims']))
            trunc_normal_(self.cls_token, std=0.02)
            trunc_normal_(self.cls_pos_embed, std=0.02)
        mixer_cfg = dict(d_state=a['d_state'], expand=a['expand'], d_conv=d_conv,
                         if_divide_out=if_divide_out)
        dpr = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        self.build_stages(
            lambda i, dp: VimBlock(a['embed_dims'], dp, residual_in_fp32, mixer_cfg=mixer_cfg),
            dpr)
        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m):
        # as upstream's segmentation backbone (dt_proj biases keep Mamba's init)
        init_linear_and_norm(m)

    def frozen_params(self):
        params = super().frozen_params()
        if self.with_cls_token:
            params += [self.cls_token, self.cls_pos_embed]
        return params

    def add_tokens(self, x):
        if not self.with_cls_token:
            return x
        pos = x.shape[1] // 2  # upstream: the middle of the patch sequence
        cls = (self.cls_token + self.cls_pos_embed).expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([x[:, :pos], cls, x[:, pos:]], dim=1)

    def strip_tokens(self, x):
        if not self.with_cls_token:
            return x
        pos = (x.shape[1] - 1) // 2
        return torch.cat([x[:, :pos], x[:, pos + 1:]], dim=1)

    def run_block(self, block, x, hw):
        return block(x)

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_vim_checkpoint(state_dict, model)

    @staticmethod
    def detect_checkpoint_variant(state_dict):
        return detect_vim_variant(state_dict)


_DROP = re.compile(r'^(head\.|rope\.|fpn\d\.)')


def convert_vim_checkpoint(state_dict: Dict[str, torch.Tensor],
                           model: Optional[Vim] = None) -> Dict[str, torch.Tensor]:
    """Map an upstream hustvl/Vim checkpoint onto :class:`Vim`.

    * ``layers.{i}.*`` -> ``stages.{i // per}.{i % per}.*`` (per = depth / 4);
    * ``pos_embed`` (1, M [+1], C): upstream's middle class token sits at index
      M // 2 (``use_middle_cls_token``).  It is split off into
      ``cls_pos_embed`` (kept only if the model has a class token) -- upstream's
      segmentation code instead drops the *first* entry, which misaligns the
      grid -- and the patch grid is resized to the model's pre-training grid;
    * the final RMSNorm ``norm_f`` becomes the last output norm ``norm3``
      (the others start at one); the classifier ``head`` and RoPE buffers
      are dropped.
    Keys already in our layout pass through.  Needs ``model`` for the depth
    and the grid size.
    """
    if model is None:
        raise ValueError('convert_vim_checkpoint needs the model (depth, grid size)')
    out = {}
    for k, v in state_dict.items():
        if _DROP.match(k):
            continue
        stage_key = convert_layer_key(k, model)
        if stage_key:
            out[stage_key] = v
        elif k == 'pos_embed':
            n = v.shape[1]
            side = int(round(math.sqrt(n)))
            if side * side != n:  # grid + a class token
                side = int(round(math.sqrt(n - 1)))
                if side * side != n - 1:
                    raise ValueError(f'Vim checkpoint pos_embed has {n} tokens: neither a square '
                                     'grid nor a square grid plus one class token')
                mid = (n - 1) // 2
                if model.with_cls_token:
                    out['cls_pos_embed'] = v[:, mid:mid + 1]
                v = torch.cat([v[:, :mid], v[:, mid + 1:]], dim=1)
            out['pos_embed'] = resize_pos_embed(v, (side, side), model.pretrain_grid)
        elif k.startswith('norm_f.'):
            if 3 in model.out_indices:
                out['norm3.' + k[len('norm_f.'):]] = v
        elif k == 'cls_token' and not model.with_cls_token:
            continue
        else:
            out[k] = v
    return out


# ------------------------------------------------------------- variants
_LABELS = {'tiny': 'Vim-Ti', 'small': 'Vim-S', 'base': 'Vim-B'}
_HINT = ("this Vim implements hustvl/Vim's released models only: bimamba v2 (a reversed "
         'direction with its own conv1d_b / x_proj_b / dt_proj_b / A_b_log / D_b), RMSNorm, '
         'absolute position embeddings and at most one (middle) class token, as '
         'vim_{tiny,small}_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2')


def detect_vim_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[dict]:
    """The upstream Vim variant and size of a checkpoint from its keys and
    shapes (hustvl/Vim's ``layers.{i}`` layout or ours); None for weights that
    are not Vim's.

    Variants: ``'middle class token'`` (``if_cls_token`` with
    ``use_middle_cls_token``: a ``cls_token`` and a position embedding of
    ``patches + 1`` tokens -- upstream's released models; the middle position
    is assumed, a head token has the same shapes) or ``'no class token'``,
    both convertible; ``'two class tokens'`` (``use_double_cls_token``),
    bimamba v1 / none (no reversed-direction parameters) and LayerNorm blocks
    (``rms_norm=False``) are not.  Sizes: embed dims, depth, d_state, expand;
    the class token and the position grid are reported, not compared (the
    converter drops the token for a model without one and resizes the grid).
    """
    layers, upstream = plain_layers(state_dict)
    ours = not upstream
    first = layers.get(0)
    if not first or 'mixer.A_log' not in first or 'norm.weight' not in first:
        return None
    C = first['norm.weight'].shape[0]
    a_log = first['mixer.A_log']
    if a_log.dim() != 2:
        return None
    d_inner, d_state = a_log.shape
    pos = state_dict.get('pos_embed')
    double = 'cls_token_head' in state_dict or 'cls_token_tail' in state_dict
    cls = 'cls_token' in state_dict
    grid = None
    if pos is not None and pos.dim() == 3:
        n = pos.shape[1] - (0 if ours else (2 if double else int(cls)))
        side = int(round(math.sqrt(max(n, 0))))
        grid = (side, side) if side * side == n else None
    bimamba_v2 = 'mixer.A_b_log' in first
    layer_norm = 'norm.bias' in first or 'norm_f.bias' in state_dict
    if double:
        variant = 'two class tokens'
    else:
        variant = 'middle class token' if cls else 'no class token'
    words = ["this package's layout" if ours else 'upstream layout (layers.i)',
             'bimamba v2' if bimamba_v2 else 'bimamba v1 / none (no A_b_log, conv1d_b ...)',
             'LayerNorm (rms_norm=False)' if layer_norm else 'RMSNorm', variant]
    convertible = bimamba_v2 and not layer_norm and not double
    params = dict(embed_dims=C, depth=max(layers) + 1, d_state=d_state,
                  expand=round(d_inner / C, 4))
    return variant_info('Vim', Vim.arch_zoo, params, variant=variant, layout=', '.join(words),
                        labels=_LABELS, extra=dict(with_cls_token=cls or double,
                                                   pretrain_grid=grid),
                        convertible=convertible,
                        model_layout='bimamba v2, RMSNorm', hint=None if convertible else _HINT)
