"""Reference for the bidirectional scan: a forward scan plus a scan of the
flipped second direction, flipped back, summed."""
from ..selective_scan.naive import selective_scan_naive


def _half(t, k, P):
    return None if t is None else t[..., k * P:(k + 1) * P] if t.dim() == 1 else \
        t[:, k * P:(k + 1) * P]


def bidirectional_scan_reference(scan, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                 delta_softplus=True, out_fp32=False):
    P = u.shape[1] // 2
    fwd = scan(u[:, :P], delta[:, :P], A[:P], B[:, 0], C[:, 0], D=_half(D, 0, P), z=z,
               delta_bias=_half(delta_bias, 0, P), delta_softplus=delta_softplus,
               out_fp32=True)
    flip = lambda t: None if t is None else t.flip(-1)  # noqa: E731
    bwd = scan(flip(u[:, P:]), flip(delta[:, P:]), A[P:], flip(B[:, 1]), flip(C[:, 1]),
               D=_half(D, 1, P), z=flip(z), delta_bias=_half(delta_bias, 1, P),
               delta_softplus=delta_softplus, out_fp32=True)
    out = fwd + bwd.flip(-1)
    return out if out_fp32 else out.to(u.dtype)


def bidirectional_scan_naive(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=True, out_fp32=False):
    return bidirectional_scan_reference(selective_scan_naive, u, delta, A, B, C, D, z,
                                        delta_bias, delta_softplus, out_fp32)
