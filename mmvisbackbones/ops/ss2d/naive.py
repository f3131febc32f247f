"""Reference for the fused SS2D scan, composed of the reference ops:
cross-scan -> sequential selective scan -> cross-merge."""
import torch

from ..cross_scan.naive import cross_merge_naive, cross_scan_naive, scan_index
from ..selective_scan.naive import selective_scan_naive


def to_scan_order_naive(t: torch.Tensor) -> torch.Tensor:
    """(Bt, 4, C, H, W), direction k's values in spatial layout ->
    (Bt, 4, C, H*W) in direction k's cross-scan order (index table)."""
    Bt, K, C, H, W = t.shape
    idx = scan_index(H, W, device=t.device)
    flat = t.reshape(Bt, K, C, H * W)
    return torch.stack([flat[:, k][..., idx[k]] for k in range(K)], dim=1)


def ss2d_scan_naive(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                    out_fp32=True):
    """``out_fp32=False``: the output in ``x``'s dtype (float64 checks)."""
    Bt, P, H, W = x.shape
    K = B.shape[1]
    xs = cross_scan_naive(x).reshape(Bt, K * P, H * W)
    ds = to_scan_order_naive(delta.reshape(Bt, K, P, H, W)).reshape(Bt, K * P, H * W)
    Bs = to_scan_order_naive(B)
    Cs = to_scan_order_naive(C)
    ys = selective_scan_naive(xs, ds, A, Bs, Cs, D=D, delta_bias=delta_bias,
                              delta_softplus=delta_softplus, out_fp32=out_fp32)
    return cross_merge_naive(ys.reshape(Bt, K, P, H, W))
