import torch.nn as nn

from .norm import build_norm2d


def sfp_branch(dim: int, scale: float, norm='ln2d') -> nn.Module:
    """One level of ViTDet's simple feature pyramid from a stride-16 map:
    x4 (two 2x2 deconvs with norm + GELU between), x2 (one deconv), x1
    (identity), x0.5 (2x2 max pool, ceil mode so odd sizes give ceil(n/2))."""
    if scale == 4:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2), build_norm2d(norm, dim),
                             nn.GELU(), nn.ConvTranspose2d(dim, dim, 2, stride=2))
    if scale == 2:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2))
    if scale == 1:
        return nn.Identity()
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2, ceil_mode=True)
    raise ValueError(f'simple feature pyramid scale must be 4, 2, 1 or 0.5, got {scale}')
