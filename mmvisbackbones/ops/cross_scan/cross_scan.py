"""VMamba SS2D cross-scan (4 directions) and its adjoint, cross-merge.

Implemented with flips / transposes as an adjoint pair of autograd Functions:
the backward of one is the other.
"""
import torch

K = 4


def _check_scan_input(x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'cross_scan: `x` must be a torch.Tensor, got '
                        f'{type(x).__name__}')
    if x.dim() != 4:
        raise ValueError(f'cross_scan: `x` must be 4-D (B, C, H, W), got '
                         f'{x.dim()}-D tensor of shape {tuple(x.shape)}')


def _check_merge_input(y):
    if not isinstance(y, torch.Tensor):
        raise TypeError(f'cross_merge: `y` must be a torch.Tensor, got '
                        f'{type(y).__name__}')
    if y.dim() != 5:
        raise ValueError(f'cross_merge: `y` must be 5-D (B, K={K}, C, H, W), '
                         f'got {y.dim()}-D tensor of shape {tuple(y.shape)}')
    if y.shape[1] != K:
        raise ValueError(f'cross_merge: `y` must have K={K} directions in dim '
                         f'1, got K={y.shape[1]} (shape {tuple(y.shape)})')


def _scan(x):
    B, C, H, W = x.shape
    row = x.reshape(B, C, H * W)                       # direction 0
    col = x.transpose(2, 3).reshape(B, C, H * W)       # direction 1
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def _merge(y):
    B, _, C, H, W = y.shape
    y = y.reshape(B, K, C, H * W)
    row = y[:, 0] + y[:, 2].flip(-1)                   # row-major order
    col = y[:, 1] + y[:, 3].flip(-1)                   # column-major order
    return row.reshape(B, C, H, W) + col.reshape(B, C, W, H).transpose(2, 3)


class CrossScanFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x):
        ctx.hw = x.shape[2:]
        return _scan(x)

    @staticmethod
    def backward(ctx, dy):
        B, _, C, _ = dy.shape
        H, W = ctx.hw
        return CrossMergeFn.apply(dy.reshape(B, K, C, H, W))


class CrossMergeFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, y):
        return _merge(y).contiguous()

    @staticmethod
    def backward(ctx, dx):
        dy = CrossScanFn.apply(dx)
        B, _, C, _ = dy.shape
        return dy.reshape(B, K, C, dx.shape[2], dx.shape[3])


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W).

    Direction 0: row-major flatten; 1: column-major flatten; 2 / 3: 0 / 1
    reversed along the sequence.
    """
    _check_scan_input(x)
    return CrossScanFn.apply(x)


def cross_merge(y: torch.Tensor) -> torch.Tensor:
    """(B, 4, C, H, W) -> (B, C, H, W), the adjoint of :func:`cross_scan`.

    ``y[:, k]`` is direction ``k``'s sequence of length ``H*W`` viewed as
    ``(H, W)``; every direction is mapped back to row-major pixel positions and
    the four are summed.
    """
    _check_merge_input(y)
    return CrossMergeFn.apply(y)
