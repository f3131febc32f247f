import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW tensor.

    Parameters have ``nn.LayerNorm``'s names and shapes, so checkpoints of
    channel-last models load unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


_NORMS = {
    'ln2d': LayerNorm2d,
    'bn': nn.BatchNorm2d,
    'syncbn': nn.SyncBatchNorm,
}


def build_norm2d(norm, num_features: int) -> nn.Module:
    """Channel-first norm from a short name (``'ln2d'``, ``'bn'``, ``'syncbn'``)
    or an mmengine-style ``dict(type=..., eps=...)``."""
    kwargs = {}
    if isinstance(norm, dict):
        kwargs = dict(norm)
        norm = kwargs.pop('type')
    key = str(norm).lower()
    if key not in _NORMS:
        raise ValueError(f'unknown norm layer {norm!r}; expected one of {sorted(_NORMS)}')
    return _NORMS[key](num_features, **kwargs)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim (mamba_ssm's ``RMSNorm``: a
    weight, no bias), computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)
