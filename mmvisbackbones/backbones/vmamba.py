"""VMamba v2 (VSSM with SS2D), Liu et al. 2024, on the common feature contract.

Faithful to the released ``MzeroMiko/VMamba`` v2 models: forward type
``v05_noz`` (no z gate, fp32 scan output, LayerNorm on the merged scan),
``ln2d`` norms (channel-first throughout), downsample ``v3`` (3x3 stride-2
conv + norm), patch embed ``v2`` (two 3x3 stride-2 convs).  Structure:

    SS2D (blocks) -> VSSBlock -> VSSStage -> VMamba (model) + arch table
    + convert_vmamba_checkpoint (upstream key layout -> ours)

Channel-first (NCHW) everywhere; a stride-2 3x3 conv with padding 1 maps
``n -> ceil(n / 2)``, so any input size gives ``ceil(H / stride)`` outputs
without explicit padding.
"""
import math
import re
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Linear2d, Mlp2d, Stage, build_norm2d, drop_path_schedule,
                      init_linear_and_norm)
from ..ops import ss2d_scan
from ..registry import register_backbone
from ..utils.checkpoint import (blocks_by_stage, rename_first_match, stage_depths, stage_widths,
                                variant_info)
from .base import BaseBackbone

K_DIRECTIONS = 4


class SS2D(nn.Module):
    """2-D selective scan: in_proj -> depthwise conv -> SiLU -> four-direction
    selective scan (cross-scan, S6, cross-merge) -> LayerNorm -> out_proj."""

    def __init__(self,
                 d_model: int,
                 d_state: int = 1,
                 ssm_ratio: float = 1.0,
                 dt_rank: Union[int, str] = 'auto',
                 d_conv: int = 3,
                 conv_bias: bool = False,
                 norm: str = 'ln2d',
                 dt_min: float = 0.001,
                 dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4,
                 dt_scale: float = 1.0):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = R = math.ceil(d_model / 16) if dt_rank == 'auto' else int(dt_rank)
        K, N = K_DIRECTIONS, d_state

        self.in_proj = Linear2d(d_model, d_inner, bias=False)
        self.dwconv = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2,
                                groups=d_inner, bias=conv_bias) if d_conv > 1 else nn.Identity()
        self.act = nn.SiLU()
        # one projection per direction: x -> (dt_low_rank, B, C)
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, d_inner))
        self.dt_proj_weight = nn.Parameter(torch.empty(K, d_inner, R))
        self.dt_proj_bias = nn.Parameter(torch.empty(K, d_inner))
        self.A_log = nn.Parameter(torch.empty(K * d_inner, N))
        self.D = nn.Parameter(torch.empty(K * d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.out_norm = build_norm2d(norm, d_inner)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)
        self._dt_init = (dt_min, dt_max, dt_init_floor, dt_scale)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """Mamba's initialisation: x_proj as nn.Linear's default, dt_proj
        uniform(+-rank^-0.5), softplus(dt_bias) log-uniform in [dt_min, dt_max],
        A = -[1..N] (S4D-real), D = 1."""
        dt_min, dt_max, floor, scale = self._dt_init
        bound = 1 / math.sqrt(self.d_inner)  # nn.Linear default (kaiming_uniform a=sqrt(5))
        self.x_proj_weight.uniform_(-bound, bound)
        std = self.dt_rank**-0.5 * scale
        self.dt_proj_weight.uniform_(-std, std)
        dt = torch.exp(torch.rand_like(self.dt_proj_bias) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=floor)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_log.copy_(torch.log(A).expand_as(self.A_log))
        self.D.fill_(1.0)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) activations -> merged four-direction scan, fp32.

        Upstream cross-scans x into four (B, D, L) sequences and projects each.
        The projections are per pixel, so projecting the map once (for all
        directions) and letting the scan walk each direction's order gives the
        same numbers without the four copies (``ss2d_scan``: fused on CUDA).
        """
        B, _, H, W = x.shape
        # the channel count from the module, not from x.shape: a traced
        # (ONNX export) size in a weight's shape makes its kernel shape unknown
        D, K, N, R = self.d_inner, K_DIRECTIONS, self.d_state, self.dt_rank
        x_dbl = F.conv2d(x, self.x_proj_weight.reshape(K * (R + 2 * N), D, 1, 1))
        dts, Bs, Cs = x_dbl.view(B, K, R + 2 * N, H, W).split([R, N, N], dim=2)
        # x_dbl's memory format (channels-last from the depthwise conv on the
        # CPU) kept for the step sizes, so the scan reads all inputs alike
        dts = dts.permute(0, 3, 4, 1, 2).reshape(B, H, W, K * R).permute(0, 3, 1, 2) \
            if x_dbl.is_contiguous(memory_format=torch.channels_last) and not x_dbl.is_contiguous() \
            else dts.reshape(B, K * R, H, W)
        dts = F.conv2d(dts, self.dt_proj_weight.reshape(K * D, R, 1, 1), groups=K)
        return ss2d_scan(x, dts, -torch.exp(self.A_log.float()), Bs, Cs, D=self.D.float(),
                         delta_bias=self.dt_proj_bias.reshape(-1).float(), delta_softplus=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.dwconv(self.in_proj(x)))
        y = self.out_norm(self.scan(h)).to(x.dtype)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(norm1(x))); x + DropPath(MLP(norm2(x)))."""

    def __init__(self, dim: int, drop_path: float = 0.0, norm: str = 'ln2d',
                 mlp_ratio: float = 4.0, ssm_cfg: Optional[dict] = None):
        super().__init__()
        self.norm1 = build_norm2d(norm, dim)
        self.ssm = SS2D(dim, norm=norm, **(ssm_cfg or {}))
        self.norm2 = build_norm2d(norm, dim)
        self.mlp = Mlp2d(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.ssm(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Downsample(nn.Module):
    """Downsample v3: 3x3 stride-2 conv (ceil(n/2) for any n) + norm."""

    def __init__(self, in_dim: int, out_dim: int, norm: str = 'ln2d'):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = build_norm2d(norm, out_dim)

    def forward(self, x):
        return self.norm(self.conv(x))


class PatchEmbed(nn.Module):
    """Patch embed v2: conv3x3/2 -> norm -> GELU -> conv3x3/2 -> norm (stride 4)."""

    def __init__(self, in_channels: int, dim: int, norm: str = 'ln2d'):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, dim // 2, 3, stride=2, padding=1)
        self.norm1 = build_norm2d(norm, dim // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.norm2 = build_norm2d(norm, dim)

    def forward(self, x):
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


@register_backbone
class VMamba(BaseBackbone):
    """VMamba v2 backbone for detection and segmentation.

    Args:
        arch: ``'tiny'`` (T[s1l8]), ``'small'`` (S[s2l15]), ``'base'`` (B[s2l15]),
            ``'test'`` (a tiny arch for unit tests and the CPU demo), or a dict
            with the keys of :attr:`arch_zoo` entries.
        out_indices: stages whose outputs are returned (strides 4, 8, 16, 32).
        drop_path_rate: stochastic depth at the last block (None: the arch's).
        norm_layer: ``'ln2d'`` (upstream's released models) or ``'bn'``.
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`BaseBackbone`.
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts
            upstream VMamba classification checkpoints (``model`` key) and
            mmdet/mmseg checkpoints of upstream or of this plugin.
    """
    model_name = 'vmamba'
    #: parameter counts upstream reports (classification model, head included)
    upstream_params = {'tiny': '30M', 'small': '50M', 'base': '89M'}
    arch_zoo = {
        # upstream vmamba_tiny_s1l8 / vmamba_small_s2l15 / vmamba_base_s2l15
        'tiny': dict(depths=(2, 2, 8, 2), dims=96, ssm_ratio=1.0, d_state=1, mlp_ratio=4.0,
                     drop_path_rate=0.2),
        'small': dict(depths=(2, 2, 15, 2), dims=96, ssm_ratio=2.0, d_state=1, mlp_ratio=4.0,
                      drop_path_rate=0.3),
        'base': dict(depths=(2, 2, 15, 2), dims=128, ssm_ratio=2.0, d_state=1, mlp_ratio=4.0,
                     drop_path_rate=0.6),
        'test': dict(depths=(1, 1, 2, 1), dims=16, ssm_ratio=1.0, d_state=1, mlp_ratio=2.0,
                     drop_path_rate=0.1),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: Optional[float] = None,
                 norm_layer: str = 'ln2d',
                 d_conv: int = 3,
                 conv_bias: bool = False,
                 dt_rank: Union[int, str] = 'auto',
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, in_channels=in_channels,
                         init_cfg=init_cfg)
        a = self.resolve_arch(arch)
        depths = tuple(a['depths'])
        dims = a['dims']
        dims = [int(dims * 2**i) for i in range(len(depths))] if isinstance(dims, int) \
            else list(dims)
        if len(dims) != len(depths):
            raise ValueError(f'VMamba: {len(dims)} dims for {len(depths)} stages')
        self.arch = a
        self.d_conv, self.conv_bias = int(d_conv), bool(conv_bias)  # compared with checkpoints
        self.num_features = dims
        self.strides = [4 * 2**i for i in range(len(depths))]
        self._check_out_indices(len(depths))
        dpr_max = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        dpr = drop_path_schedule(depths, dpr_max)
        ssm_cfg = dict(d_state=a['d_state'], ssm_ratio=a['ssm_ratio'], dt_rank=dt_rank,
                       d_conv=d_conv, conv_bias=conv_bias)

        self.patch_embed = PatchEmbed(in_channels, dims[0], norm_layer)
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            # [Downsample] -> VSSBlock x depth; stage 0 has no downsample
            self.stages.append(Stage(
                Downsample(dims[i - 1], dims[i], norm_layer) if i > 0 else None,
                [VSSBlock(dims[i], dpr[i][j], norm_layer, a['mlp_ratio'], ssm_cfg)
                 for j in range(depth)], with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm2d(norm_layer, dims[i]))

        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module):
        # as upstream: trunc_normal(0.02) for linear layers, unit LayerNorm;
        # the SSM parameters keep SS2D.reset_ssm_parameters' values.
        init_linear_and_norm(m)

    def forward_stages(self, x):
        return self.stage_outputs(self.patch_embed(x))

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_vmamba_checkpoint(state_dict)

    @staticmethod
    def detect_checkpoint_variant(state_dict):
        return detect_vmamba_variant(state_dict)


# ------------------------------------------------------------- converter
_UPSTREAM_RULES = [
    # patch embed v2: Sequential(conv, Identity, norm, Identity, GELU, conv, Identity, norm)
    (r'^patch_embed\.0\.', 'patch_embed.conv1.'),
    (r'^patch_embed\.2\.', 'patch_embed.norm1.'),
    (r'^patch_embed\.5\.', 'patch_embed.conv2.'),
    (r'^patch_embed\.7\.', 'patch_embed.norm2.'),
    # blocks
    (r'^layers\.(\d+)\.blocks\.(\d+)\.norm\.', r'stages.\1.blocks.\2.norm1.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.conv2d\.', r'stages.\1.blocks.\2.ssm.dwconv.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.dt_projs_weight$', r'stages.\1.blocks.\2.ssm.dt_proj_weight'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.dt_projs_bias$', r'stages.\1.blocks.\2.ssm.dt_proj_bias'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.A_logs$', r'stages.\1.blocks.\2.ssm.A_log'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.Ds$', r'stages.\1.blocks.\2.ssm.D'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.', r'stages.\1.blocks.\2.ssm.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.blocks.\2.'),
    # mmdet/mmseg backbone output norms
    (r'^outnorm(\d+)\.', r'norm\1.'),
]
_UPSTREAM_DROP = re.compile(r'^(classifier\.|head\.|norm\.)')
_DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.(\d+)\.(.*)$')


def convert_vmamba_checkpoint(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map upstream VMamba v2 keys (classification ``VSSM`` or the mmdet/mmseg
    ``MM_VSSM`` backbone, prefix already stripped) onto :class:`VMamba`'s.

    Pure function; keys already in our layout pass through unchanged and the
    classifier head is dropped.  Upstream's ``layers.i.downsample`` (which
    ends stage i) becomes our ``stages.{i+1}.downsample`` (which starts
    stage i+1).
    """
    out = {}
    for key, value in state_dict.items():
        if _UPSTREAM_DROP.match(key):
            continue
        m = _DOWNSAMPLE.match(key)
        if m:
            stage, idx, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            part = {1: 'conv', 3: 'norm'}.get(idx)
            if part is None:  # downsample v1/v2 layouts are other architectures
                out[key] = value
                continue
            out[f'stages.{stage + 1}.downsample.{part}.{rest}'] = value
            continue
        out[rename_first_match(key, _UPSTREAM_RULES)] = value
    return out


# ------------------------------------------------------------- variants
_VARIANT_BLOCK = re.compile(r'^(?:layers|stages)\.(\d+)\.blocks\.(\d+)\.(.+)$')
_UP_DOWN = re.compile(r'^layers\.(\d+)\.downsample\.(.+)$')
#: upstream's model functions by (depths, stage-0 width, ssm_ratio, d_state)
_UPSTREAM_NAMES = {
    ((2, 2, 8, 2), 96, 1.0, 1): 'VMamba-T[s1l8] (vmamba_tiny_s1l8)',
    ((2, 2, 15, 2), 96, 2.0, 1): 'VMamba-S[s2l15] (vmamba_small_s2l15)',
    ((2, 2, 15, 2), 128, 2.0, 1): 'VMamba-B[s2l15] (vmamba_base_s2l15)',
    ((2, 2, 5, 2), 96, 2.0, 1): 'VMamba-T[s2l5] (vmamba_tiny_s2l5, vssm1_tiny_0230)',
    ((2, 2, 20, 2), 96, 1.0, 1): 'VMamba-S[s1l20] (vmamba_small_s1l20)',
    ((2, 2, 20, 2), 128, 1.0, 1): 'VMamba-B[s1l20] (vmamba_base_s1l20)',
    ((2, 2, 9, 2), 96, 2.0, 16): 'VMamba-T v0 (vssm_tiny, vanilla_vmamba_tiny)',
    ((2, 2, 27, 2), 96, 2.0, 16): 'VMamba-S v0 (vssm_small, vanilla_vmamba_small)',
    ((2, 2, 27, 2), 128, 2.0, 16): 'VMamba-B v0 (vssm_base, vanilla_vmamba_base)',
}
_MODEL_LAYOUT = 'v2 layout: forward type v05_noz, downsample v3, patch embed v2, with MLP'
_V2_HINT = ("this VMamba implements upstream's v2 models only (forward type v05_noz, "
            'downsample v3, patch embed v2, with MLP: vmamba_tiny_s1l8 / vmamba_small_s2l15 / '
            'vmamba_base_s2l15, released as vssm1_tiny_0230s_ckpt_epoch_264.pth / '
            'vssm_small_0229_ckpt_epoch_222.pth / vssm_base_0229_ckpt_epoch_237.pth); '
            "use one of those with arch 'tiny' / 'small' / 'base'")


def _downsample_version(state_dict) -> Optional[str]:
    for key, value in state_dict.items():
        m = _UP_DOWN.match(key)
        if m:
            if m.group(2).startswith('reduction.'):
                return 'v1'
            if m.group(2) == '1.weight':
                k = value.shape[-1]
                return {2: 'v2', 3: 'v3'}.get(k, f'a {k}x{k} conv')
        elif re.match(r'^stages\.\d+\.downsample\.conv\.weight$', key):
            return 'v3'
    return None


def _patch_embed_version(state_dict) -> Optional[str]:
    if 'patch_embed.conv1.weight' in state_dict or 'patch_embed.5.weight' in state_dict:
        return 'v2'
    if 'patch_embed.proj.weight' in state_dict or 'patch_embed.0.weight' in state_dict:
        return 'v1'
    return None


def detect_vmamba_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[dict]:
    """The upstream VMamba variant and size of a checkpoint, from its keys and
    shapes (upstream's layouts or ours, prefix stripped); None for weights
    that are not VMamba's.

    Variants: ``'v0'`` -- the first release (``blocks.j.self_attention.*``,
    ``ln_1``) or upstream's later ``vanilla_vmamba_*`` (``op.*``, forward
    type v0): a z gate, no MLP, d_state 16, PatchMerging2D downsample
    (``reduction`` / ``norm``), 4x4 patch embed; ``'v2'`` -- the current
    models (forward type ``v05_noz``: no z gate, downsample v3, patch embed
    v2, MLP), the only one :class:`VMamba` implements, at any depths / widths
    / ssm_ratio / d_state; ``'m0'`` (Mamba2 SSD blocks) and ``'other'`` (a
    v2-family combination of upstream's ablation switches: z gate, downsample
    v1/v2, patch embed v1, no MLP, no LayerNorm out norm), both not
    convertible.  Sizes: depths, widths, ssm_ratio (d_inner / width),
    d_state, mlp_ratio, the depthwise conv's kernel and bias."""
    blocks = blocks_by_stage(state_dict, _VARIANT_BLOCK)
    first = blocks.get(0, {}).get(0)
    if not first:
        return None
    op = next((p for p in ('self_attention.', 'op.', 'ssm.') if any(
        r.startswith(p + 'A_log') or r.startswith(p + 'x_proj_weight') for r in first)), None)
    if op is None:
        return None
    ours = op == 'ssm.'
    norm = {'self_attention.': 'ln_1.weight', 'op.': 'norm.weight', 'ssm.': 'norm1.weight'}[op]
    widths = [blocks[i][min(blocks[i])].get(norm) for i in sorted(blocks)]
    if any(w is None or w.dim() != 1 for w in widths):
        return None
    C = widths[0].shape[0]
    depths = stage_depths(blocks)
    dims = stage_widths([w.shape[0] for w in widths]) if depths else None
    xp = first.get(op + 'x_proj_weight')
    ds = first.get(op + 'Ds')
    m0 = (ds is not None and ds.dim() == 3) or op + 'conv2d.1.weight' in first
    dt = first.get(op + ('dt_proj_weight' if ours else 'dt_projs_weight'))
    d_inner = d_state = None
    if xp is not None and xp.dim() == 3:
        d_inner = xp.shape[2]
        rank = dt.shape[2] if dt is not None and dt.dim() == 3 else math.ceil(C / 16)
        d_state = (xp.shape[1] - rank) // 2
    in_proj = first.get(op + 'in_proj.weight')
    z_gate = in_proj is not None and d_inner is not None and in_proj.shape[0] == 2 * d_inner
    conv = first.get(op + ('dwconv.weight' if ours else 'conv2d.weight'))
    fc1 = first.get('mlp.fc1.weight')
    mlp_ratio = round(fc1.shape[0] / C, 4) if fc1 is not None else 0.0
    ln_out = first.get(op + 'out_norm.weight') is not None
    down, embed = _downsample_version(state_dict), _patch_embed_version(state_dict)
    ssm_ratio = round(d_inner / C, 4) if d_inner else None
    params = dict(depths=depths, dims=dims, ssm_ratio=ssm_ratio, d_state=d_state,
                  mlp_ratio=mlp_ratio, d_conv=conv.shape[-1] if conv is not None else None,
                  conv_bias=(op + ('dwconv.bias' if ours else 'conv2d.bias')) in first)

    if m0:
        forward = 'm0 (Mamba2 SSD)'
    elif d_inner is None:
        forward = 'unknown (no x_proj_weight: an xv* forward type?)'
    else:
        forward = ('v05_noz family (no z gate)' if not z_gate
                   else 'v0 / v2 / v3 family with a z gate (not _noz)')
    words = [{'self_attention.': 'self_attention keys (the first release)',
              'op.': 'op keys', 'ssm.': "this package's keys"}[op], f'forward type {forward}',
             'with MLP' if mlp_ratio else 'no MLP']
    if down:
        words.append(f'downsample {down}' + (' (PatchMerging2D)' if down == 'v1' else ''))
    if embed:
        words.append(f'patch embed {embed}')
    if not ln_out and not m0:
        words.append('no LayerNorm out norm (_onnone / _onsoftmax / _ondwconv3 ...)')
    if m0:
        variant = 'm0'
    elif d_inner is None:
        variant = 'other'
    elif op == 'self_attention.' or (z_gate and not mlp_ratio and down in ('v1', None)):
        variant = 'v0'
    elif (not z_gate and mlp_ratio and ln_out and down in ('v3', None)
          and embed in ('v2', None)):
        variant = 'v2'
    else:
        variant = 'other'
    convertible = variant == 'v2'
    label = _UPSTREAM_NAMES.get((depths, widths[0].shape[0], ssm_ratio, d_state)) \
        if depths else None
    if label is None:
        label = f'VMamba {variant}'
    return variant_info('VMamba', VMamba.arch_zoo, params, variant=variant,
                        layout=f'{variant} layout: ' + ', '.join(words), label=label,
                        convertible=convertible, model_layout=_MODEL_LAYOUT,
                        hint=None if convertible else _V2_HINT)
