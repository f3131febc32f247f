"""Reference bidirectional WKV: the full (T, T) weight matrix per channel.

O(T^2) time and memory; easy to read. Every other backend is tested against
it. Gradients come from ordinary autograd.
"""
import torch

from ._common import check_wkv_inputs


def bi_wkv_naive(w, u, k, v):
    """Bidirectional WKV of Vision-RWKV, reference implementation.

    For every channel::

        e[t, i] = k_i - (|t - i| - 1) * w     (i != t)
        e[t, t] = u + k_t
        y_t     = sum_i exp(e[t, i]) v_i / sum_i exp(e[t, i])

    i.e. a softmax over ``i`` of ``e[t, :]``; the row maximum is subtracted
    before ``exp`` so no exponent overflows.

    Args:
        w, u: ``(C,)`` decay and bonus (already divided by T by the caller).
        k, v: ``(B, T, C)``.

    Returns:
        ``(B, T, C)`` in ``v.dtype``.
    """
    meta = check_wkv_inputs(w, u, k, v)
    cd = meta.compute_dtype
    T = meta.length
    kk = k.to(cd).transpose(1, 2)                        # (B, C, T)
    vv = v.to(cd).transpose(1, 2)
    pos = torch.arange(T, device=k.device, dtype=cd)
    dist = (pos[:, None] - pos[None, :]).abs() - 1       # (T, T): |t - i| - 1
    e = kk[:, :, None, :] - dist * w.to(cd)[:, None, None]   # (B, C, t, i)
    diag = torch.eye(T, dtype=torch.bool, device=k.device)
    e = torch.where(diag, (u.to(cd)[:, None] + kk)[:, :, :, None], e)
    # the result does not depend on the shift: keep it out of autograd
    e = e - e.amax(dim=-1, keepdim=True).detach()
    p = torch.exp(e)
    y = (p * vv[:, :, None, :]).sum(-1) / p.sum(-1)      # (B, C, T)
    return y.transpose(1, 2).to(meta.out_dtype)
