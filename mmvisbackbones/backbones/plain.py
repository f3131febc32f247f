"""Common machinery of the plain (non-hierarchical) backbones: Vim, Vision-RWKV.

A plain model embeds 16x16 patches, runs ``depth`` blocks over the token
sequence and has no strides of its own.  To meet the feature contract:

* the input is zero-padded (bottom/right) to a multiple of the patch size,
  so any H, W >= 32 works;
* the absolute position embeddings are stored for the pre-training grid and
  resized (bicubic) to the token grid at run time;
* the blocks are grouped into four equal stages; the token state after each
  stage is normalised (``norm{i}``), reshaped to a stride-16 map and turned
  into strides 4 / 8 / 16 / 32 by ViTDet's simple feature pyramid
  (``fpns.{i}``: deconvs up, identity, max-pool down), or, with
  ``pyramid='none'``, returned as four stride-16 maps (the plain models'
  UperNet recipes of PlainMamba and mmseg's ViT feed those to the head);
* outputs are cropped back to ``ceil(H / stride)``.

``frozen_stages=k`` freezes the patch embedding and position embedding
(k >= 0) and stages 0..k-1 with their norms and pyramid branches.
"""
import math
import re
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_

from ..layers import RMSNorm, pad_to_multiple, resize_pos_embed, sfp_branch
from .base import BaseBackbone

SFP_SCALES = (4, 2, 1, 0.5)  # strides 4, 8, 16, 32 from a stride-16 map
#: 'sfp': strides 4 / 8 / 16 / 32 by the simple feature pyramid; 'none': all 16
PYRAMIDS = ('sfp', 'none')


def convert_square_pos_embed(pos: torch.Tensor, model: 'PlainBackbone',
                             source: str) -> torch.Tensor:
    """A checkpoint's ``(1, side * side, C)`` position grid resized to
    ``model``'s pre-training grid (``source`` names the checkpoint's family
    in the error a non-square grid raises)."""
    side = int(round(math.sqrt(pos.shape[1])))
    if side * side != pos.shape[1]:
        raise ValueError(f'{source} checkpoint pos_embed has {pos.shape[1]} tokens, '
                         'not a square grid')
    return resize_pos_embed(pos, (side, side), model.pretrain_grid)


_UPSTREAM_LAYER = re.compile(r'^layers\.(\d+)\.(.*)$')


def convert_layer_key(key: str, model: 'PlainBackbone') -> Optional[str]:
    """Upstream's ``layers.{i}.rest`` -> our ``stages.{i // per}.{i % per}.rest``
    (``per`` = blocks per stage); None for a key that is not a layer's."""
    m = _UPSTREAM_LAYER.match(key)
    if m is None:
        return None
    i, per = int(m.group(1)), model.depth // model.num_stages
    return f'stages.{i // per}.{i % per}.{m.group(2)}'


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (a stride-``patch`` conv)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int = 16):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(pad_to_multiple(x, self.patch_size))
        return x.flatten(2).transpose(1, 2), x.shape[-2:]


class PlainBackbone(BaseBackbone):
    """Subclasses build their blocks with :meth:`build_stages` and implement
    :meth:`run_block` (and may override :meth:`add_tokens` / :meth:`strip_tokens`
    for class tokens)."""
    num_stages = 4

    def __init__(self, embed_dims: int, depth: int, in_channels: int = 3,
                 patch_size: int = 16, pretrain_img_size: int = 224,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: str = 'ln',
                 sfp_norm: str = 'ln2d', frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg: Optional[dict] = None,
                 out_norm_eps: Optional[float] = None, pyramid: str = 'sfp',
                 patch_embed: Optional[nn.Module] = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, in_channels=in_channels,
                         init_cfg=init_cfg)
        if depth % self.num_stages:
            raise ValueError(f'{type(self).__name__}: depth {depth} must be a multiple of '
                             f'{self.num_stages} (the blocks form four equal stages)')
        self.embed_dims = embed_dims
        self.depth = depth
        self.num_features = [embed_dims] * self.num_stages
        if pyramid not in PYRAMIDS:
            raise ValueError(f'{type(self).__name__}: pyramid must be one of {PYRAMIDS}, '
                             f'got {pyramid!r}')
        self.pyramid = pyramid
        self.strides = [4, 8, 16, 32] if pyramid == 'sfp' else [16] * self.num_stages
        self._check_out_indices(self.num_stages)
        # a module returning (tokens, (h, w)) at stride patch_size; default a strided conv
        self.patch_embed = patch_embed or PatchEmbed(in_channels, embed_dims, patch_size)
        self.pretrain_grid = (pretrain_img_size // patch_size, ) * 2
        self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.pretrain_grid), embed_dims))
        trunc_normal_(self.pos_embed, std=0.02)
        self.fpns = nn.ModuleDict(
            {str(i): sfp_branch(embed_dims, SFP_SCALES[i] if pyramid == 'sfp' else 1, sfp_norm)
             for i in self.out_indices})
        norms = {'ln': nn.LayerNorm, 'rms': RMSNorm}
        if out_norm not in norms:
            raise ValueError(f'{type(self).__name__}: out_norm must be one of {sorted(norms)}, '
                             f'got {out_norm!r}')
        eps = {} if out_norm_eps is None else dict(eps=out_norm_eps)
        for i in self.out_indices:  # token-wise norm of each output (the last = final norm)
            self.add_module(f'norm{i}', norms[out_norm](embed_dims, **eps))

    # ------------------------------------------------------------ building
    def build_stages(self, make_block, drop_path_rate: float):
        """``make_block(index, drop_path)`` -> block, grouped into 4 stages."""
        per = self.depth // self.num_stages
        self.drop_path_rate = drop_path_rate
        dpr = [drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        self.stages = nn.ModuleList(
            nn.ModuleList(make_block(s * per + j, dpr[s * per + j]) for j in range(per))
            for s in range(self.num_stages))

    def frozen_modules(self) -> List[nn.Module]:
        mods = super().frozen_modules()
        for i in range(self.frozen_stages):
            if str(i) in self.fpns:
                mods.append(self.fpns[str(i)])
        return mods

    def frozen_params(self) -> List[nn.Parameter]:
        return [self.pos_embed]

    # ------------------------------------------- layer-wise lr decay
    @property
    def num_layers(self) -> int:
        """Blocks counted by :meth:`layer_id` (the depth)."""
        return self.depth

    def layer_id(self, name: str) -> int:
        """Layer of parameter ``name`` (relative to the backbone) for
        layer-wise lr decay (``engine/layer_decay.py``), numbered as BEiT /
        ViT-Adapter number a ViT: 0 for what comes before the blocks (patch
        embedding, position embedding, tokens), ``i + 1`` for block ``i``,
        ``depth + 1`` for the output norms and the pyramid."""
        parts = name.split('.')
        if parts[0] == 'stages':
            return int(parts[1]) * (self.depth // self.num_stages) + int(parts[2]) + 1
        if parts[0] == 'fpns' or re.fullmatch(r'norm\d+', parts[0]):
            return self.depth + 1
        if not hasattr(self, parts[0]):
            raise KeyError(f'{type(self).__name__}.layer_id: no parameter {name!r}')
        return 0

    # ------------------------------------------------------------- forward
    def add_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def strip_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def run_block(self, block: nn.Module, x: torch.Tensor, hw) -> torch.Tensor:
        raise NotImplementedError

    def forward_stages(self, x):
        H, W = x.shape[-2:]
        x, hw = self.patch_embed(x)
        x = x + resize_pos_embed(self.pos_embed, self.pretrain_grid, hw)
        x = self.add_tokens(x)
        outs = []
        for i, stage in enumerate(self.stages):
            for blk in stage:
                if self.with_cp and torch.is_grad_enabled():
                    x = cp.checkpoint(self.run_block, blk, x, hw, use_reentrant=False)
                else:
                    x = self.run_block(blk, x, hw)
            if i in self.out_indices:
                t = getattr(self, f'norm{i}')(self.strip_tokens(x))
                fmap = t.transpose(1, 2).reshape(t.shape[0], -1, *hw)
                fmap = self.fpns[str(i)](fmap)
                # ceil(H / s) in integer arithmetic, traceable; not -(-H // s):
                # the ONNX exporter turns // of a negative size into truncation
                s = self.strides[i]
                outs.append(fmap[..., :(H + s - 1) // s, :(W + s - 1) // s].contiguous())
        return outs
