"""Vision-RWKV (Duan et al. 2024) on the common feature contract.

Faithful to OpenGVLab/Vision-RWKV (v1, ``VRWKV``): 16x16 patch embedding,
absolute position embedding resized to the token grid, and blocks of

* spatial mix: Q-Shift token shift (a quarter of the channels each shifted
  one pixel right / left / down / up), interpolation with the shifted tokens
  (``spatial_mix_k/v/r``), key / value / receptance projections, the
  bidirectional WKV over all tokens (decay ``spatial_decay / T``, bonus
  ``spatial_first / T``), optional key norm, sigmoid(receptance) gate,
  output projection;
* channel mix: Q-Shift, squared-ReLU MLP gated by sigmoid(receptance);

with ``ln0`` before the first block, pre-norm (tiny) or post-norm (small and
up) residuals, layer scale where upstream has it, and key norms for the deep
model.  Dense outputs: four equal stages and the simple feature pyramid of
:class:`PlainBackbone`.  Upstream's final ``ln1`` becomes the last output norm.

Structure: q_shift -> SpatialMix / ChannelMix -> VRWKVBlock -> VisionRWKV,
the arch table, :class:`VisionRWKVAdapter` (upstream's detection and
segmentation backbone ``VRWKV_Adapter``: VisionRWKV in a ViT-Adapter) and
:func:`convert_vision_rwkv_checkpoint`.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import DropPath
from ..ops.wkv import bi_wkv
from ..registry import register_backbone
from ..utils.checkpoint import plain_layers, variant_info
from .plain import PlainBackbone, convert_layer_key, convert_square_pos_embed
from .vit_adapter import ViTAdapter, split_adapter_arch


def q_shift(x: torch.Tensor, hw: Tuple[int, int], shift: int = 1,
            gamma: float = 0.25) -> torch.Tensor:
    """Q-Shift of (B, T, C) tokens on an H x W grid: channel quarter 0 moves
    right, 1 left, 2 down, 3 up by ``shift`` pixels (zeros fill in); the rest
    stays."""
    B, T, C = x.shape
    H, W = hw
    g = int(C * gamma)
    x = x.transpose(1, 2).reshape(B, C, H, W)
    q = [x[:, i * g:(i + 1) * g] for i in range(4)]
    out = torch.cat([
        F.pad(q[0], (shift, 0))[..., :W],          # right
        F.pad(q[1], (0, shift))[..., shift:],      # left
        F.pad(q[2], (0, 0, shift, 0))[..., :H, :],  # down
        F.pad(q[3], (0, 0, 0, shift))[..., shift:, :],  # up
        x[:, 4 * g:],
    ], dim=1)
    return out.flatten(2).transpose(1, 2)


def _mix_ratio(C: int, power: float) -> torch.Tensor:
    return torch.pow(torch.arange(C, dtype=torch.float32) / C, power).view(1, 1, C)


class SpatialMix(nn.Module):

    def __init__(self, dim: int, n_layer: int, layer_id: int, key_norm: bool = False,
                 shift_pixel: int = 1, channel_gamma: float = 0.25):
        super().__init__()
        self.shift_pixel, self.channel_gamma = shift_pixel, channel_gamma
        # upstream's 'fancy' init
        r01 = layer_id / max(n_layer - 1, 1)
        r10 = 1.0 - layer_id / n_layer
        h = torch.arange(dim, dtype=torch.float32) / max(dim - 1, 1)
        self.spatial_decay = nn.Parameter(-5 + 8 * h**(0.7 + 1.3 * r01))
        zigzag = (torch.tensor([(i + 1) % 3 - 1 for i in range(dim)]) * 0.5).float()
        self.spatial_first = nn.Parameter(torch.ones(dim) * math.log(0.3) + zigzag)
        self.spatial_mix_k = nn.Parameter(_mix_ratio(dim, r10))
        self.spatial_mix_v = nn.Parameter(_mix_ratio(dim, r10) + 0.3 * r01)
        self.spatial_mix_r = nn.Parameter(_mix_ratio(dim, 0.5 * r10))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.key_norm = nn.LayerNorm(dim) if key_norm else None
        self.output = nn.Linear(dim, dim, bias=False)

    def forward(self, x, hw):
        T = x.shape[1]
        xx = q_shift(x, hw, self.shift_pixel, self.channel_gamma)
        k = self.key(torch.lerp(xx, x, self.spatial_mix_k))
        v = self.value(torch.lerp(xx, x, self.spatial_mix_v))
        r = self.receptance(torch.lerp(xx, x, self.spatial_mix_r))
        y = bi_wkv(self.spatial_decay.float() / T, self.spatial_first.float() / T, k, v)
        if self.key_norm is not None:
            y = self.key_norm(y)
        return self.output(torch.sigmoid(r) * y)


class ChannelMix(nn.Module):

    def __init__(self, dim: int, n_layer: int, layer_id: int, hidden_rate: int = 4,
                 key_norm: bool = False, shift_pixel: int = 1, channel_gamma: float = 0.25):
        super().__init__()
        self.shift_pixel, self.channel_gamma = shift_pixel, channel_gamma
        r10 = 1.0 - layer_id / n_layer
        self.spatial_mix_k = nn.Parameter(_mix_ratio(dim, r10))
        self.spatial_mix_r = nn.Parameter(_mix_ratio(dim, r10))
        hidden = hidden_rate * dim
        self.key = nn.Linear(dim, hidden, bias=False)
        self.key_norm = nn.LayerNorm(hidden) if key_norm else None
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)

    def forward(self, x, hw):
        xx = q_shift(x, hw, self.shift_pixel, self.channel_gamma)
        k = torch.square(torch.relu(self.key(torch.lerp(xx, x, self.spatial_mix_k))))
        if self.key_norm is not None:
            k = self.key_norm(k)
        r = self.receptance(torch.lerp(xx, x, self.spatial_mix_r))
        return torch.sigmoid(r) * self.value(k)


class VRWKVBlock(nn.Module):
    """Pre-norm: x + DropPath(g * mix(ln(x))); post-norm: x + DropPath(g * ln(mix(x)))."""

    def __init__(self, dim: int, n_layer: int, layer_id: int, drop_path: float = 0.0,
                 post_norm: bool = False, init_values: Optional[float] = None,
                 key_norm: bool = False, hidden_rate: int = 4):
        super().__init__()
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(dim)
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.att = SpatialMix(dim, n_layer, layer_id, key_norm)
        self.ffn = ChannelMix(dim, n_layer, layer_id, hidden_rate, key_norm)
        self.drop_path = DropPath(drop_path)
        self.post_norm = post_norm
        if init_values is not None:
            self.gamma1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None

    def _branch(self, x, mix, ln, gamma, hw):
        y = ln(mix(x, hw)) if self.post_norm else mix(ln(x), hw)
        return self.drop_path(y if gamma is None else gamma * y)

    def forward(self, x, hw):
        if self.layer_id == 0:
            x = self.ln0(x)
        x = x + self._branch(x, self.att, self.ln1, self.gamma1, hw)
        return x + self._branch(x, self.ffn, self.ln2, self.gamma2, hw)


@register_backbone
class VisionRWKV(PlainBackbone):
    """Vision-RWKV backbone with a simple feature pyramid (strides 4-32).

    Args:
        arch: 'tiny' (192, 12 layers), 'small' (384, 12), 'base' (768, 12),
            'large' (1024, 24), 'test'; or a dict with the same keys.
        pretrain_img_size: size the position embedding is stored for
            (None: 224, or 192 for 'large' as its released weights).
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate,
        init_cfg: the common contract.  ``init_cfg=dict(type='Pretrained',
            checkpoint=...)`` accepts upstream Vision-RWKV checkpoints
            (mmcls ``state_dict`` with ``backbone.`` keys, or bare).
    """
    model_name = 'vrwkv'
    upstream_params = {'tiny': '6.2M', 'small': '23.8M', 'base': '93.7M', 'large': '334.9M'}
    dense_only_prefixes = ('fpns.', )  # upstream's final norm ln1 is our norm3

    @classmethod
    def classification_head_params(cls, channels, arch):
        # models deeper than 12 layers use an MLP head upstream:
        # Linear(C, 3072) -> Tanh -> Linear(3072, 1000)
        if arch['depth'] <= 12:
            return channels * 1000 + 1000
        return channels * 3072 + 3072 + 3072 * 1000 + 1000
    arch_zoo = {
        'tiny': dict(embed_dims=192, depth=12, post_norm=False, init_values=None,
                     key_norm=False, drop_path_rate=0.1),
        'small': dict(embed_dims=384, depth=12, post_norm=True, init_values=1.0,
                      key_norm=False, drop_path_rate=0.3),
        'base': dict(embed_dims=768, depth=12, post_norm=True, init_values=1e-5,
                     key_norm=False, drop_path_rate=0.5),
        # released large weights: ImageNet-22k at 192 (vrwkv_l_in22k_192.pth)
        'large': dict(embed_dims=1024, depth=24, post_norm=True, init_values=1e-5,
                      key_norm=True, drop_path_rate=0.4, pretrain_img_size=192),
        'test': dict(embed_dims=32, depth=4, post_norm=True, init_values=1.0,
                     key_norm=True, drop_path_rate=0.1),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 patch_size: int = 16,
                 pretrain_img_size: Optional[int] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: Optional[float] = None,
                 hidden_rate: int = 4,
                 sfp_norm: str = 'ln2d',
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        a = self.resolve_arch(arch)
        if pretrain_img_size is None:
            pretrain_img_size = a.get('pretrain_img_size', 224)
        super().__init__(a['embed_dims'], a['depth'], in_channels=in_channels,
                         patch_size=patch_size, pretrain_img_size=pretrain_img_size,
                         out_indices=out_indices, sfp_norm=sfp_norm, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, init_cfg=init_cfg)
        self.arch = a
        dpr = a['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        self.build_stages(
            lambda i, dp: VRWKVBlock(a['embed_dims'], a['depth'], i, dp, a['post_norm'],
                                     a['init_values'], a['key_norm'], hidden_rate), dpr)
        self._freeze_stages()

    def run_block(self, block, x, hw):
        return block(x, hw)

    def checkpoint_optional_prefixes(self):
        """With a layer scale initialised to exactly 1 (upstream's VRWKV-T
        detection and segmentation recipes on the classification weights of
        a model without one) the scales may be missing from a checkpoint:
        a scale of 1 is no scale, so the model computes what the checkpoint
        did.  Any other initial scale must come from the checkpoint."""
        extra = ()
        if self.arch.get('init_values') == 1.0:
            per = self.depth // self.num_stages
            extra = tuple(f'stages.{i // per}.{i % per}.gamma{k}' for i in range(self.depth)
                          for k in (1, 2))
        return super().checkpoint_optional_prefixes() + extra

    @staticmethod
    def convert_checkpoint(state_dict, model=None):
        return convert_vision_rwkv_checkpoint(state_dict, model)

    @staticmethod
    def detect_checkpoint_variant(state_dict):
        return detect_vision_rwkv_variant(state_dict)


#: upstream's adapter settings of its VRWKV-T / S detection and segmentation recipes
_UPSTREAM_ADAPTER = dict(interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]],
                         conv_inplane=64, n_points=4, deform_num_heads=6, deform_ratio=1.0,
                         cffn_ratio=0.25)


@register_backbone
class VisionRWKVAdapter(ViTAdapter):
    """Vision-RWKV with a ViT-Adapter: upstream's ``VRWKV_Adapter``, the
    backbone of its Mask R-CNN and UperNet recipes (strides 4 / 8 / 16 / 32,
    ``embed_dims`` channels each).  A :class:`ViTAdapter` around a
    :class:`VisionRWKV` whose arch entry holds both parts' settings.

    Args:
        arch: ``'tiny'`` / ``'small'`` (upstream's detection and segmentation
            settings: the plain model's, e.g. tiny's layer scale of 1, and the
            adapter's ``interaction_indexes``, ``conv_inplane``,
            ``n_points``, ``deform_num_heads``, ``deform_ratio``,
            ``cffn_ratio``), ``'test'`` or a dict of all of these.
        pretrain_img_size, in_channels: the plain model's.
        drop_path_rate: the plain model's and the extractors' (None: the arch's).
        norm, add_vit_feature, use_extra_extractor, out_indices,
        frozen_stages, norm_eval, with_cp: as :class:`ViTAdapter`.
        backbone_init_cfg: the plain model's ``init_cfg``: an upstream
            classification checkpoint (``vrwkv_t_in1k_224.pth``), loaded
            when the adapter has no ``init_cfg``.
        init_cfg: ``Pretrained``: a detection / segmentation checkpoint of
            upstream's adapter (``backbone.`` keys) or of ours.
    """
    model_name = 'vrwkv_adapter'
    #: the backbone's parameters in the paper's COCO table (with the adapter)
    upstream_params = {'tiny': '8.4M', 'small': '29.3M'}
    arch_zoo = {
        'tiny': dict(embed_dims=192, depth=12, post_norm=False, init_values=1.0,
                     key_norm=False, drop_path_rate=0.1, **_UPSTREAM_ADAPTER),
        'small': dict(embed_dims=384, depth=12, post_norm=True, init_values=1e-5,
                      key_norm=False, drop_path_rate=0.2, **_UPSTREAM_ADAPTER),
        'test': dict(embed_dims=32, depth=4, post_norm=True, init_values=1.0, key_norm=True,
                     drop_path_rate=0.1, interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
                     conv_inplane=16, n_points=4, deform_num_heads=4, deform_ratio=0.5,
                     cffn_ratio=0.25),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 pretrain_img_size: Optional[int] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: Optional[float] = None,
                 norm: str = 'syncbn',
                 add_vit_feature: bool = True,
                 use_extra_extractor: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 backbone_init_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        a = self.resolve_arch(arch)
        plain, adapter = split_adapter_arch(a)
        if drop_path_rate is not None:
            plain['drop_path_rate'] = drop_path_rate
        vit = VisionRWKV(arch=plain, in_channels=in_channels,
                         pretrain_img_size=pretrain_img_size, init_cfg=backbone_init_cfg)
        super().__init__(vit, norm=norm, add_vit_feature=add_vit_feature,
                         use_extra_extractor=use_extra_extractor, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg, **adapter)
        self.arch = a


def convert_vision_rwkv_checkpoint(state_dict: Dict[str, torch.Tensor],
                                   model: Optional[VisionRWKV] = None
                                   ) -> Dict[str, torch.Tensor]:
    """Map an upstream OpenGVLab/Vision-RWKV (v1) checkpoint onto
    :class:`VisionRWKV`: ``layers.{i}`` -> ``stages.{i // per}.{i % per}``,
    mmcv's ``patch_embed.projection`` -> ``patch_embed.proj``,
    the final ``ln1`` -> the last output norm ``norm3``, the position grid
    resized to the model's pre-training grid, the classifier ``head`` dropped.
    Keys already in our layout pass through.  Needs ``model`` (depth, grid)."""
    if model is None:
        raise ValueError('convert_vision_rwkv_checkpoint needs the model (depth, grid size)')
    out = {}
    for k, v in state_dict.items():
        if k.startswith(('head.', 'neck.')):
            continue
        if k.startswith('patch_embed.projection.'):  # mmcv's PatchEmbed
            k = 'patch_embed.proj.' + k[len('patch_embed.projection.'):]
        stage_key = convert_layer_key(k, model)
        if stage_key:
            out[stage_key] = v
        elif k.startswith('ln1.'):
            if 3 in model.out_indices:
                out['norm3.' + k[4:]] = v
        elif k == 'pos_embed':
            out[k] = convert_square_pos_embed(v, model, 'Vision-RWKV')
        else:
            out[k] = v
    return out


# ------------------------------------------------------------- variants


def detect_vision_rwkv_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[dict]:
    """Vision-RWKV's size from a checkpoint's keys and shapes (upstream's
    ``layers.{i}`` or our ``stages.{s}.{j}``): width, depth and whether the
    blocks have ``key_norm``; None for weights that are not Vision-RWKV's."""
    layers, upstream = plain_layers(state_dict)
    first = layers.get(0, {})
    if 'att.spatial_decay' not in first or 'ln1.weight' not in first:
        return None
    params = dict(embed_dims=first['ln1.weight'].shape[0], depth=max(layers) + 1,
                  key_norm='att.key_norm.weight' in first)
    return variant_info('Vision-RWKV', VisionRWKV.arch_zoo, params, variant='v1',
                        layout='upstream layout' if upstream else "this package's layout",
                        labels={'tiny': 'VRWKV-T', 'small': 'VRWKV-S', 'base': 'VRWKV-B',
                                'large': 'VRWKV-L'})
