"""Reference cross-scan / cross-merge built from an explicit index table.

For every direction ``k`` and sequence position ``l``, ``scan_index(H, W)[k, l]``
is the row-major pixel index ``h * W + w`` that direction ``k`` reads:

* k = 0: row-major        (l = h * W + w)
* k = 1: column-major     (l = w * H + h)
* k = 2: k = 0 reversed   (l -> H*W - 1 - l)
* k = 3: k = 1 reversed
"""
import torch

K = 4


def scan_index(H: int, W: int, device=None) -> torch.Tensor:
    """``(4, H*W)`` long tensor: pixel (row-major index) read at (k, l)."""
    L = H * W
    row_major = [h * W + w for h in range(H) for w in range(W)]
    col_major = [h * W + w for w in range(W) for h in range(H)]
    table = [
        row_major,
        col_major,
        [row_major[L - 1 - l] for l in range(L)],
        [col_major[L - 1 - l] for l in range(L)],
    ]
    return torch.tensor(table, dtype=torch.long, device=device)


def cross_scan_naive(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W) by gathering along the index table."""
    if x.dim() != 4:
        raise ValueError(f'cross_scan_naive: `x` must be 4-D (B, C, H, W), '
                         f'got shape {tuple(x.shape)}')
    B, C, H, W = x.shape
    flat = x.reshape(B, C, H * W)
    idx = scan_index(H, W, x.device)
    return torch.stack([flat[:, :, idx[k]] for k in range(K)], dim=1)


def cross_merge_naive(y: torch.Tensor) -> torch.Tensor:
    """(B, 4, C, H, W) -> (B, C, H, W): scatter-add each direction back."""
    if y.dim() != 5 or y.shape[1] != K:
        raise ValueError(f'cross_merge_naive: `y` must be 5-D (B, 4, C, H, W), '
                         f'got shape {tuple(y.shape)}')
    B, _, C, H, W = y.shape
    idx = scan_index(H, W, y.device)
    out = y.new_zeros(B, C, H * W)
    for k in range(K):
        out = out.index_add(2, idx[k], y[:, k].reshape(B, C, H * W))
    return out.reshape(B, C, H, W)
