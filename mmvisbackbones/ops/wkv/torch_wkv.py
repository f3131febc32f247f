"""Bidirectional WKV in pure PyTorch: O(T * C) work, the CPU backend.

Split the sum of :func:`.naive.bi_wkv_naive` into the tokens left of ``t``,
the tokens right of ``t`` and ``t`` itself::

    S_t = sum_{i<t} exp(k_i - (t-1-i) w) (v_i, 1)      (left state)
    S_{t+1} = exp(-w) S_t + exp(k_t) (v_t, 1)

and the mirror image from the right.  Every state is kept as
``exp(m) * s`` where ``m`` is the largest exponent in the sum, so each
update multiplies by factors ``<= 1`` and nothing overflows for any sign or
size of ``w`` and ``k``.

The scans are blocked (:func:`decay_scan`): the sequence is cut into chunks
of about ``sqrt(T)`` tokens; one Python loop steps through the positions of
all chunks at once, a log-step scan over the chunk axis gives the carry
entering every chunk (``ceil(log2(nc))`` rounds), and a last vectorised pass
adds each chunk's incoming carry to its positions: ``O(sqrt(T))`` Python
steps in all.

Export.  When traced (``torch.jit.trace`` / ``torch.onnx.export``) the chunk
length is the constant :data:`TRACE_CHUNK`, the padding is always recorded,
the carry scan runs a fixed :data:`TRACE_CARRY_ROUNDS` rounds whose shifts
clamp at the sequence start (extra rounds change nothing), and the autograd
Function is bypassed: nothing in the graph depends on ``T``, so one exported
graph is exact for any token count up to ``TRACE_CHUNK * 2**TRACE_CARRY_ROUNDS``.

The backward is analytic (:class:`BiWKVTorchFn`): with ``p[t, i]`` the
softmax weights of output ``t`` and ``g`` the incoming gradient,

* ``dv_i = sum_t g_t p[t, i]`` and ``dk_i = sum_t g_t p[t, i] (v_i - y_t)``:
  the same two decayed scans over ``t`` of ``(g_t, g_t y_t) / Z_t``;
* ``du = sum_t g_t p[t, t] (v_t - y_t)``;
* ``dw = -sum_t g_t sum_{i != t} (|t-i| - 1) p[t, i] (v_i - y_t)``: from the
  derivatives of the forward states with respect to ``w``, carried along
  the same scans (``dS_{t+1} = exp(-w) (dS_t - S_t)``).

The forward saves only its inputs; the backward recomputes the forward.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .._common import tracing as _tracing
from ._common import NEG, check_wkv_inputs

#: chunk length of a traced (exported) graph, whatever the token count
TRACE_CHUNK = 16
#: log-step rounds of the chunk-carry scan in a traced graph: token counts up
#: to ``TRACE_CHUNK * 2**TRACE_CARRY_ROUNDS`` are exact
TRACE_CARRY_ROUNDS = 16


def _shift(x: torch.Tensor, k: int, dim: int, fill: float) -> torch.Tensor:
    """``x`` moved ``k`` places towards the end of ``dim``, the vacated places
    set to ``fill``; ``k`` may exceed the length (the slices clamp: all
    ``fill``)."""
    idx = [slice(None)] * x.dim()
    idx_fill, idx_keep = list(idx), list(idx)
    idx_fill[dim], idx_keep[dim] = slice(None, k), slice(None, -k)
    return torch.cat([torch.full_like(x[tuple(idx_fill)], fill), x[tuple(idx_keep)]], dim)


def _carry_scan(m, s, ds, wL, L):
    """Carries entering every chunk from its chunk sums, by log-step rounds.

    ``m`` ``(B, nc, C)``, ``s``, ``ds`` ``(n, B, nc, C)``: chunk ``c``'s own
    sum seen from chunk ``c + 1``'s start.  The carry obeys
    ``K_{c+1} = exp(-w L) K_c + S_c``; round ``r`` adds
    ``exp(-d w L) E_{c-d}`` (``d = 2**r``) to the inclusive sums ``E_c`` in
    max-exponent form (``ds``: its ``w``-derivative, ``-d L`` times the sum
    plus the decayed derivative).  Returns the exclusive carries
    ``K_c = E_{c-1}`` (empty for the first chunk)."""
    nc = m.shape[1]
    rounds = TRACE_CARRY_ROUNDS if _tracing() else math.ceil(math.log2(nc)) if nc > 1 else 0
    d = 1
    for _ in range(rounds):
        # decay before the shift: the vacated places are exactly NEG
        pm = _shift(m - d * wL, d, 1, NEG)
        ps = _shift(s, d, 2, 0.0)
        m_new = torch.maximum(m, pm)
        own, prev = torch.exp(m - m_new), torch.exp(pm - m_new)
        if ds is not None:
            ds = ds * own + (_shift(ds, d, 2, 0.0) - (d * L) * ps) * prev
        s = s * own + ps * prev
        m = m_new
        d *= 2
    return (_shift(m, 1, 1, NEG), _shift(s, 1, 2, 0.0),
            _shift(ds, 1, 2, 0.0) if ds is not None else None)


def default_chunk(T: int) -> int:
    """Chunk length of the blocked scan: about sqrt(T) (fewest Python steps)."""
    return max(1, int(math.ceil(math.sqrt(T))))


def decay_scan(x: torch.Tensor, vals: torch.Tensor, w: torch.Tensor,
               with_dw: bool = False, chunk: Optional[int] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Left-to-right decayed sums of ``vals`` with log-weights ``x``.

    Args:
        x: ``(B, T, C)`` log-weights.
        vals: ``(n, B, T, C)`` values.
        w: ``(C,)`` decay per step.
        with_dw: also return the derivative with respect to ``w``.

    Returns:
        ``(m, s, ds)`` with ``m`` ``(B, T, C)``, ``s`` and ``ds``
        ``(n, B, T, C)`` such that::

            exp(m_t) s_t  = sum_{i<t} exp(x_i - (t-1-i) w) vals_i
            exp(m_t) ds_t = sum_{i<t} -(t-1-i) exp(x_i - (t-1-i) w) vals_i

        ``m_t`` is the largest exponent of the sum (``NEG`` when empty), so
        ``|s_t| <= sum |vals_i|``. ``ds`` is ``None`` unless ``with_dw``.
    """
    n, B, T, C = vals.shape
    traced = _tracing()
    L = TRACE_CHUNK if traced else chunk or default_chunk(T)
    nc = (T + L - 1) // L  # not -(-T // L): exported, // of a negative size truncates
    pad = nc * L - T
    if traced or pad:
        x = F.pad(x, (0, 0, 0, pad), value=NEG)
        vals = F.pad(vals, (0, 0, 0, pad))
    x = x.reshape(B, nc, L, C)
    vals = vals.reshape(n, B, nc, L, C)

    # 1. every chunk at once: the sums over the chunk's own tokens
    m = x.new_full((B, nc, C), NEG)
    s = vals.new_zeros((n, B, nc, C))
    ds = vals.new_zeros((n, B, nc, C)) if with_dw else None
    m_loc, s_loc, ds_loc = [], [], []
    for j in range(L):
        m_loc.append(m)
        s_loc.append(s)
        ds_loc.append(ds)
        xj = x[:, :, j]
        mw = m - w
        m_new = torch.maximum(mw, xj)
        old = torch.exp(mw.sub_(m_new))
        new = torch.exp(xj - m_new)
        if with_dw:
            ds = (ds - s).mul_(old)
        s = torch.addcmul(s * old, vals[:, :, :, j], new)
        m = m_new
    # (m, s, ds) now sum each whole chunk, seen from the next chunk's start

    # 2. chunk to chunk: the carry entering every chunk
    c_m, c_s, c_ds = _carry_scan(m, s, ds, w * L, L)

    # 3. position j of a chunk: its own part plus the carry decayed j steps
    m_loc = torch.stack(m_loc, 2)                              # (B, nc, L, C)
    s_loc = torch.stack(s_loc, 3)                              # (n, B, nc, L, C)
    j = torch.arange(L, device=x.device, dtype=x.dtype)[:, None]
    cmj = c_m[:, :, None] - j * w                              # (B, nc, L, C)
    m_out = torch.maximum(m_loc, cmj)
    own = torch.exp(m_loc - m_out)
    carried = torch.exp(cmj - m_out)
    c_s = c_s[:, :, :, None]                                   # (n, B, nc, 1, C)
    s_out = s_loc * own + c_s * carried
    ds_out = None
    if with_dw:
        ds_loc = torch.stack(ds_loc, 3)
        c_ds = c_ds[:, :, :, None]
        ds_out = ds_loc * own + (c_ds - j * c_s) * carried
        ds_out = ds_out.reshape(n, B, nc * L, C)[:, :, :T]
    return (m_out.reshape(B, nc * L, C)[:, :T],
            s_out.reshape(n, B, nc * L, C)[:, :, :T], ds_out)


def _both_sides(x, vals, w, with_dw, chunk):
    """:func:`decay_scan` from the left and from the right (flipped)."""
    left = decay_scan(x, vals, w, with_dw, chunk)
    m, s, ds = decay_scan(x.flip(1), vals.flip(2), w, with_dw, chunk)
    right = (m.flip(1), s.flip(2), ds.flip(2) if ds is not None else None)
    return left, right


def _forward(w, u, k, v, with_dw, chunk):
    """Output and the pieces the backward needs (all in k's dtype)."""
    vals = torch.stack([v, torch.ones_like(v)])
    (mL, sL, dsL), (mR, sR, dsR) = _both_sides(k, vals, w, with_dw, chunk)
    uk = u + k
    M = torch.maximum(torch.maximum(mL, mR), uk)
    eL, eR, eD = torch.exp(mL - M), torch.exp(mR - M), torch.exp(uk - M)
    num = sL[0] * eL + sR[0] * eR + v * eD
    den = sL[1] * eL + sR[1] * eR + eD          # >= 1: the largest term is 1
    y = num / den
    return y, dict(M=M, den=den, eL=eL, eR=eR, eD=eD, dsL=dsL, dsR=dsR)


class BiWKVTorchFn(torch.autograd.Function):
    """Blocked-scan bi-WKV with an analytic backward (inputs already cast to
    the compute dtype)."""

    @staticmethod
    def forward(ctx, w, u, k, v, chunk):
        y, _ = _forward(w, u, k, v, False, chunk)
        ctx.save_for_backward(w, u, k, v)
        ctx.chunk = chunk
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        w, u, k, v = ctx.saved_tensors
        chunk = ctx.chunk
        need_w = ctx.needs_input_grad[0]
        y, p = _forward(w, u, k, v, need_w, chunk)
        g = gy.to(k.dtype)
        q = g / p['den']                            # g_t / Z_t, times exp(M_t)
        gw = None
        if need_w:
            dsL, dsR = p['dsL'], p['dsR']
            gw = (q * (p['eL'] * (dsL[0] - y * dsL[1]) +
                       p['eR'] * (dsR[0] - y * dsR[1]))).sum((0, 1))
        qd = q * p['eD']                            # g_t p[t, t]
        gu = (qd * (v - y)).sum((0, 1))
        # sums over t != i of exp(-(|t-i|-1) w) g_t (1, y_t) / Z_t
        lse = p['M'] + torch.log(p['den'])
        vals = torch.stack([g, g * y])
        (mL, sL, _), (mR, sR, _) = _both_sides(-lse, vals, w, False, chunk)
        fL = torch.exp(k + mL)                      # k_i + m <= 0: no overflow
        fR = torch.exp(k + mR)
        P = sL[0] * fL + sR[0] * fR
        Q = sL[1] * fL + sR[1] * fR
        gv = P + qd
        gk = v * P - Q + qd * (v - y)
        return gw, gu, gk, gv, None


def bi_wkv_torch(w, u, k, v, chunk: Optional[int] = None):
    """Bidirectional WKV, blocked PyTorch scans; arguments as
    :func:`.naive.bi_wkv_naive`. ``chunk``: block length (default ~sqrt(T))."""
    meta = check_wkv_inputs(w, u, k, v)
    cd = meta.compute_dtype
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                              or chunk < 1):
        raise ValueError(f'bi_wkv: `chunk` must be a positive int or None, got {chunk!r}')
    args = (w.to(cd), u.to(cd), k.to(cd), v.to(cd))
    if _tracing():  # the forward's ops themselves, not an opaque Function
        y, _ = _forward(*args, False, chunk)
    else:
        y = BiWKVTorchFn.apply(*args, chunk)
    return y.to(meta.out_dtype)
