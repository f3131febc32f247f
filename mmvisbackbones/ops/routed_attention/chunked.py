"""Memory-light routed attention: gather one chunk of routed regions at a
time, online (flash-style) softmax, and a backward that recomputes.

Upstream BiFormer gathers the keys and values of all ``K`` routed regions of
every query region at once (a ``(B, R, K, T, C)`` copy, ``K`` times the k/v
tensors) and autograd keeps that copy plus the ``(B, R, h, T, K*T)``
attention matrix for the backward.  Here:

* forward: the routed regions are visited ``chunk`` at a time; each step
  gathers only ``chunk`` regions' k/v, computes their logits and folds them
  into a running max / normaliser / fp32 accumulator (the online softmax of
  FlashAttention), so the transient memory is ``chunk / K`` of upstream's;
* what is saved for the backward: q, k, v, the output and the per-query
  log-sum-exp (no gathered copies, no attention matrix);
* backward (own :class:`torch.autograd.Function`): per chunk, gather again,
  recompute the probabilities from the saved log-sum-exp, and scatter the
  key/value gradients back to their regions with ``index_add_``.

The result equals :func:`.naive.routed_attention_reference` up to rounding.
Matmuls run in the input dtype; softmax statistics and the accumulators are
fp32 (autocast is switched off inside, inputs keep the dtype they come in).
"""
import contextlib

import torch
from torch.autograd.function import once_differentiable

from .._common import compute_dtype

#: routed regions gathered per step by default: 1 gives the least memory and was
#: as fast as 4 or faster on CPU; larger chunks give larger matmuls (GPU: to be
#: measured, see BENCHMARKS.md).
DEFAULT_CHUNK = 1


def _flat_index(r_idx: torch.Tensor, num_regions: int) -> torch.Tensor:
    """(B, R, K) region indices -> indices into the (B * R) flattened regions."""
    offs = torch.arange(r_idx.shape[0], device=r_idx.device).view(-1, 1, 1) * num_regions
    return r_idx + offs


def _gather(xf: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """xf (B*R, h, T, c), idx (B, R, n) -> (B, R, h, n*T, c)."""
    B, R, n = idx.shape
    _, h, T, c = xf.shape
    return xf[idx].transpose(2, 3).reshape(B, R, h, n * T, c)


def _to_regions(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, R, h, n*T, c) gradients of gathered tokens -> (B*R*n, h, T, c),
    rows ordered like ``idx.reshape(-1)``."""
    B, R, h, nT, c = x.shape
    return x.view(B, R, h, n, nT // n, c).transpose(2, 3).reshape(B * R * n, h, nT // n, c)


def _forward(q, k, v, flat, scale, chunk):
    B, R, h, T, d = q.shape
    f32 = compute_dtype(q)
    dv = v.shape[-1]
    K = flat.shape[-1]
    kf, vf = k.view(B * R, h, T, d), v.view(B * R, h, T, dv)
    qs = q * scale
    m = q.new_full((B, R, h, T, 1), float('-inf'), dtype=f32)
    l = q.new_zeros((B, R, h, T, 1), dtype=f32)
    acc = q.new_zeros((B, R, h, T, dv), dtype=f32)
    for s in range(0, K, chunk):
        idx = flat[..., s:s + chunk]
        logits = (qs @ _gather(kf, idx).transpose(-1, -2)).to(f32)  # (B, R, h, T, n*T)
        m_new = torch.maximum(m, logits.amax(dim=-1, keepdim=True))
        p = torch.exp(logits.sub_(m_new))
        alpha = torch.exp(m - m_new)
        l.mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
        acc.mul_(alpha).add_(p.to(v.dtype) @ _gather(vf, idx))
        m = m_new
    out = acc.div_(l).to(q.dtype)
    lse = m.add_(l.log_())
    return out, lse


def _backward(q, k, v, flat, out, lse, dout, scale, chunk, need_q, need_k, need_v):
    B, R, h, T, d = q.shape
    dv_dim = v.shape[-1]
    K = flat.shape[-1]
    dt = q.dtype
    f32 = compute_dtype(q)
    kf, vf = k.view(B * R, h, T, d), v.view(B * R, h, T, dv_dim)
    dout = dout.contiguous().to(dt)
    delta = (dout.to(f32) * out.to(f32)).sum(dim=-1, keepdim=True)  # rowsum(dO * O)
    qs = q * scale
    dq = torch.zeros_like(q, dtype=f32) if need_q else None
    dk = kf.new_zeros(kf.shape, dtype=f32) if need_k else None
    dv = vf.new_zeros(vf.shape, dtype=f32) if need_v else None
    for s in range(0, K, chunk):
        idx = flat[..., s:s + chunk]
        n = idx.shape[-1]
        rows = idx.reshape(-1)
        ks = _gather(kf, idx)
        vs = _gather(vf, idx)
        p = torch.exp((qs @ ks.transpose(-1, -2)).to(f32).sub_(lse))  # (B, R, h, T, n*T)
        if need_v:
            dv.index_add_(0, rows, _to_regions(p.to(dt).transpose(-1, -2) @ dout, n).to(f32))
        if need_q or need_k:
            dp = (dout @ vs.transpose(-1, -2)).to(f32)
            ds = p.mul_(dp.sub_(delta)).to(dt)  # d loss / d (qs @ k^T)
            if need_q:
                dq.add_(ds @ ks)
            if need_k:
                dk.index_add_(0, rows, _to_regions(ds.transpose(-1, -2) @ qs, n).to(f32))
    return (dq.mul_(scale).to(dt) if need_q else None,
            dk.view(k.shape).to(dt) if need_k else None,
            dv.view(v.shape).to(dt) if need_v else None)


def _no_autocast(device_type: str):
    """Autocast off inside the op (the dtypes are managed explicitly); a no-op
    on devices without autocast (e.g. 'meta', used for FLOP counting)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class RoutedAttentionFunction(torch.autograd.Function):
    """Autograd wrapper; see the module docstring."""

    @staticmethod
    def forward(ctx, q, k, v, r_idx, scale, chunk):
        flat = _flat_index(r_idx, q.shape[1])
        with _no_autocast(q.device.type):
            out, lse = _forward(q, k, v, flat, scale, chunk)
        ctx.save_for_backward(q, k, v, flat, out, lse)
        ctx.scale, ctx.chunk = scale, chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        q, k, v, flat, out, lse = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        with _no_autocast(q.device.type):
            dq, dk, dv = _backward(q, k, v, flat, out, lse, dout, ctx.scale, ctx.chunk,
                                   need_q, need_k, need_v)
        return dq, dk, dv, None, None, None


def routed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor,
                     scale: float, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Routed attention without the ``K``-fold gathered copy.

    Args:
        q, k: (B, R, h, T, d) queries / keys by region (R regions of T tokens)
            and head (h heads).
        v: (B, R, h, T, dv) values.
        r_idx: (B, R, K) int64 indices (in ``[0, R)``) of the regions each query
            region attends to.
        scale: logit scale, applied to q.
        chunk: routed regions gathered per step (>= 1).

    Returns:
        (B, R, h, T, dv) in q's dtype; equal to
        :func:`routed_attention_reference` up to rounding, forward and backward.
    """
    if q.dim() != 5 or k.shape != q.shape or v.dim() != 5 or v.shape[:4] != q.shape[:4]:
        raise ValueError('routed_attention: expected q, k (B, R, h, T, d) and v (B, R, h, T, dv) '
                         f'with equal leading dims, got q {tuple(q.shape)}, k {tuple(k.shape)}, '
                         f'v {tuple(v.shape)}')
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f'routed_attention: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}')
    if r_idx.dim() != 3 or tuple(r_idx.shape[:2]) != tuple(q.shape[:2]) or \
            r_idx.dtype != torch.int64:
        raise ValueError('routed_attention: r_idx must be int64 of shape (B, R, K) = '
                         f'({q.shape[0]}, {q.shape[1]}, K), got {r_idx.dtype} '
                         f'{tuple(r_idx.shape)}')
    if int(chunk) < 1:
        raise ValueError(f'routed_attention: chunk must be >= 1, got {chunk}')
    return RoutedAttentionFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(),
                                         r_idx, float(scale), int(chunk))
