"""Reference selective scan: a plain sequential loop over time.

Slow (one Python step per position) but easy to read; every other backend is
tested against it. Gradients come from ordinary autograd.
"""
import torch
import torch.nn.functional as F

from ._common import check_scan_inputs


def selective_scan_naive(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                         delta_softplus=False, return_last_state=False,
                         out_fp32=False):
    """Mamba S6 selective scan, reference implementation.

    Args:
        u, delta: ``(Bt, Dm, L)`` inputs and step sizes.
        A: ``(Dm, N)`` real state matrix (diagonal per channel).
        B, C: ``(Bt, G, N, L)`` or ``(Bt, N, L)`` input-dependent projections.
        D: optional ``(Dm,)`` skip connection.
        z: optional ``(Bt, Dm, L)`` gate; the output is ``y * silu(z)``.
        delta_bias: optional ``(Dm,)`` added to ``delta``.
        delta_softplus: apply softplus to ``delta (+ delta_bias)``.
        return_last_state: also return the final state ``(Bt, Dm, N)``.
        out_fp32: return a float32 output instead of ``u.dtype``.

    Returns:
        ``out`` or ``(out, last_state)``.
    """
    meta = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, out_fp32)
    cd = meta.compute_dtype
    rep = meta.dim // meta.groups  # channels per group

    u_ = u.to(cd)
    dt = delta.to(cd)
    if delta_bias is not None:
        dt = dt + delta_bias.to(cd)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A_ = A.to(cd)
    # (Bt, G, N, L) -> (Bt, Dm, N, L): channel d reads group d // rep
    B_ = meta.B.to(cd).repeat_interleave(rep, dim=1)
    C_ = meta.C.to(cd).repeat_interleave(rep, dim=1)

    h = u_.new_zeros(meta.batch, meta.dim, meta.d_state)
    ys = []
    for t in range(meta.length):
        dt_t = dt[:, :, t, None]                       # (Bt, Dm, 1)
        decay = torch.exp(dt_t * A_)                   # (Bt, Dm, N)
        h = decay * h + dt_t * B_[..., t] * u_[:, :, t, None]
        ys.append((C_[..., t] * h).sum(-1))            # (Bt, Dm)
    y = torch.stack(ys, dim=-1)                        # (Bt, Dm, L)

    if D is not None:
        y = y + D.to(cd)[:, None] * u_
    if z is not None:
        y = y * F.silu(z.to(cd))
    out = y.to(meta.out_dtype)
    if return_last_state:
        return out, h
    return out
