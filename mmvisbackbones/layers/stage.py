"""Pieces every hierarchical backbone's stages share."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_


def run_blocks(blocks: Sequence[nn.Module], x: torch.Tensor, *args,
               with_cp: bool = False) -> torch.Tensor:
    """``x = block(x, *args)`` for each block; with ``with_cp`` (and autograd
    on) each block is activation-checkpointed (recomputed in backward)."""
    for blk in blocks:
        if with_cp and torch.is_grad_enabled():
            x = cp.checkpoint(blk, x, *args, use_reentrant=False)
        else:
            x = blk(x, *args)
    return x


class Stage(nn.Module):
    """One stage of a hierarchical backbone: ``[downsample] -> blocks``.

    ``downsample`` (None for stage 0, whose input comes from the stem)
    reduces the resolution and sets the width; the blocks keep them.  Keys:
    ``downsample.*``, ``blocks.{j}.*``.  Subclasses whose blocks take extra
    inputs (computed once per stage) override :meth:`block_args`.
    """

    def __init__(self, downsample: Optional[nn.Module], blocks: Sequence[nn.Module],
                 with_cp: bool = False):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return run_blocks(self.blocks, x, *self.block_args(x), with_cp=self.with_cp)

    def block_args(self, x: torch.Tensor) -> tuple:
        """Extra inputs every block gets after ``x`` (none here)."""
        return ()


def drop_path_schedule(depths: Sequence[int], rate: float) -> List[List[float]]:
    """Per-stage lists of stochastic-depth rates growing linearly from 0 at
    the first block to ``rate`` at the last (upstream's ``torch.linspace``)."""
    n = sum(depths)
    rates = [rate * i / max(n - 1, 1) for i in range(n)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def init_linear_and_norm(m: nn.Module, std: float = 0.02):
    """The initialisation of timm-style models, to use with ``module.apply``:
    linear weights trunc_normal(std), zero biases (except those marked
    ``_no_reinit``, e.g. Mamba's dt_proj bias); LayerNorm / BatchNorm weight
    1, bias 0.  Other modules keep their own initialisation."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=std)
        if m.bias is not None and not getattr(m.bias, '_no_reinit', False):
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
        if m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
