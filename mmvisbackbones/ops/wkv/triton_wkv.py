"""Bidirectional WKV as Triton kernels (forward and backward).

JIT-compiled on first use for CUDA tensors: no build step.  Also runs on the
CPU under ``TRITON_INTERPRET=1`` (slow; that is how CI tests it).

Work split: one program per (batch, tile of ``BLOCK_C`` channels); the
program walks the sequence in chunks of ``BLOCK_T`` tokens, with fp32 state
in registers and no buffer whose size depends on a compile-time ``T``.

* :func:`_right_carry_kernel` walks the chunks from the end and stores, for
  every chunk, the decayed sum of all tokens right of it (``B * C * T /
  BLOCK_T`` small states).
* :func:`_fwd_kernel` walks the chunks from the start, carrying the sum of
  all tokens left of the chunk.  Inside a chunk the weights of the chunk's
  own tokens form a ``(BLOCK_T, BLOCK_T)`` matrix per channel; with the two
  carries as two more terms, each output is one max-stabilised softmax-like
  sum.  It optionally writes the fp32 output and ``log Z_t`` (the log of
  the denominator) for the backward.
* the backward recomputes the forward (only the inputs are saved), then runs
  the same two passes over ``(g_t, g_t y_t) / Z_t`` (log-weights
  ``-log Z_t``), which give ``dk`` and ``dv``; the carries also hold their
  derivatives with respect to ``w`` for ``dw``.  ``dw`` and ``du`` are
  written per batch and summed on the host.

Every state is ``exp(m) * s`` with ``m`` the largest exponent in it, so all
factors applied are ``<= 1``: any sign and size of ``w`` and ``k`` is fine.
Inputs may be fp32, fp16 or bf16; all math is fp32.
"""
import contextlib

import torch

from .._triton import HAS_TRITON, check_triton_inputs as _check, tl, triton
from ._common import NEG, check_wkv_inputs

BLOCK_T = 16
MAX_BLOCK_C = 16  # 16 x 16 x 16 tiles: no register spills on sm_90

if HAS_TRITON:
    _NEG = tl.constexpr(NEG)

    @triton.jit
    def _right_carry_kernel(x_ptr, a_ptr, b_ptr, w_ptr, carry_ptr, T, C, NC,
                            BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
                            BWD: tl.constexpr, NS: tl.constexpr):
        """carry[b, c] = sum over tokens i right of chunk c (i >= e, e the
        chunk's end) of exp(x_i - (i - e) w) * (v1_i, v2_i), stored as
        (m, s1, s2) [+ (ds1, ds2), d/dw, when BWD].

        forward: x = k, (v1, v2) = (v, 1);  BWD: x = -lse, (v1, v2) = (g, g y).
        NS: fields per state (3, or 5 when BWD)."""
        pid_c = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = cs < C
        jt = tl.arange(0, BLOCK_T)
        jf = jt.to(tl.float32)[:, None]
        w = tl.load(w_ptr + cs, mask=mask_c, other=0.0)
        base = b * T * C
        m = tl.full((BLOCK_C, ), _NEG, tl.float32)
        s1 = tl.zeros((BLOCK_C, ), tl.float32)
        s2 = tl.zeros((BLOCK_C, ), tl.float32)
        d1 = tl.zeros((BLOCK_C, ), tl.float32)
        d2 = tl.zeros((BLOCK_C, ), tl.float32)
        for cc in range(0, NC):
            c = NC - 1 - cc
            st = carry_ptr + (b * NC + c) * NS * C + cs
            tl.store(st, m, mask=mask_c)
            tl.store(st + C, s1, mask=mask_c)
            tl.store(st + 2 * C, s2, mask=mask_c)
            if BWD:
                tl.store(st + 3 * C, d1, mask=mask_c)
                tl.store(st + 4 * C, d2, mask=mask_c)
            ts = c * BLOCK_T + jt
            m2 = (ts < T)[:, None] & mask_c[None, :]
            off = base + ts[:, None] * C + cs[None, :]
            x = tl.load(x_ptr + off, mask=m2, other=0.0).to(tl.float32)
            v1 = tl.load(a_ptr + off, mask=m2, other=0.0).to(tl.float32)
            if BWD:
                x = -x
                v2 = v1 * tl.load(b_ptr + off, mask=m2, other=0.0).to(tl.float32)
            else:
                v2 = tl.where(m2, 1.0, 0.0)
            e = tl.where(m2, x - jf * w[None, :], _NEG)      # relative to chunk start
            m_new = tl.maximum(m - BLOCK_T * w, tl.max(e, axis=0))
            old = tl.exp(m - BLOCK_T * w - m_new)
            p = tl.exp(e - m_new[None, :])
            if BWD:
                d1 = (d1 - BLOCK_T * s1) * old - tl.sum(jf * p * v1, axis=0)
                d2 = (d2 - BLOCK_T * s2) * old - tl.sum(jf * p * v2, axis=0)
            s1 = s1 * old + tl.sum(p * v1, axis=0)
            s2 = s2 * old + tl.sum(p * v2, axis=0)
            m = m_new

    @triton.jit
    def _tile_setup(w_ptr, u_ptr, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """What the forward and backward kernels derive for their channel tile:
        channels and mask, in-chunk positions, the (|t - i| - 1) distances and
        the diagonal of a chunk, and the tile's w and u."""
        cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = cs < C
        jt = tl.arange(0, BLOCK_T)
        jf = jt.to(tl.float32)[:, None]
        dist = (tl.abs(jt[:, None] - jt[None, :]) - 1).to(tl.float32)[:, :, None]
        diag = (jt[:, None] == jt[None, :])[:, :, None]
        w = tl.load(w_ptr + cs, mask=mask_c, other=0.0)
        u = tl.load(u_ptr + cs, mask=mask_c, other=0.0)
        return cs, mask_c, jt, jf, dist, diag, w, u

    @triton.jit
    def _fwd_kernel(k_ptr, v_ptr, w_ptr, u_ptr, carry_ptr, y_ptr, lse_ptr, T, C, NC,
                    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, WRITE_LSE: tl.constexpr):
        b = tl.program_id(1).to(tl.int64)
        cs, mask_c, jt, jf, dist, diag, w, u = _tile_setup(w_ptr, u_ptr, C, BLOCK_T, BLOCK_C)
        base = b * T * C
        # tokens left of the chunk, seen from the chunk's start
        mL = tl.full((BLOCK_C, ), _NEG, tl.float32)
        aL = tl.zeros((BLOCK_C, ), tl.float32)
        bL = tl.zeros((BLOCK_C, ), tl.float32)
        for c in range(0, NC):
            ts = c * BLOCK_T + jt
            m2 = (ts < T)[:, None] & mask_c[None, :]
            off = base + ts[:, None] * C + cs[None, :]
            k = tl.load(k_ptr + off, mask=m2, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + off, mask=m2, other=0.0).to(tl.float32)
            kx = tl.where(m2, k, _NEG)
            st = carry_ptr + (b * NC + c) * 3 * C + cs
            mR = tl.load(st, mask=mask_c, other=_NEG)
            aR = tl.load(st + C, mask=mask_c, other=0.0)
            bR = tl.load(st + 2 * C, mask=mask_c, other=0.0)

            # row t, column i: exponent of token i in output t (chunk's own tokens)
            E = kx[None, :, :] - dist * w[None, None, :]
            E = tl.where(diag, (u[None, :] + k)[:, None, :], E)
            cl = mL[None, :] - jf * w[None, :]                      # left carry at t
            cr = mR[None, :] - (BLOCK_T - 1 - jf) * w[None, :]      # right carry at t
            M = tl.maximum(tl.max(E, axis=1), tl.maximum(cl, cr))
            P = tl.exp(E - M[:, None, :])
            fl = tl.exp(cl - M)
            fr = tl.exp(cr - M)
            num = tl.sum(P * v[None, :, :], axis=1) + aL[None, :] * fl + aR[None, :] * fr
            den = tl.sum(P, axis=1) + bL[None, :] * fl + bR[None, :] * fr
            tl.store(y_ptr + off, (num / den).to(y_ptr.dtype.element_ty), mask=m2)
            if WRITE_LSE:
                tl.store(lse_ptr + off, M + tl.log(den), mask=m2)

            # move the left carry past this chunk
            e = kx - (BLOCK_T - 1 - jf) * w[None, :]
            m_new = tl.maximum(mL - BLOCK_T * w, tl.max(e, axis=0))
            old = tl.exp(mL - BLOCK_T * w - m_new)
            p = tl.exp(e - m_new[None, :])
            aL = aL * old + tl.sum(p * v, axis=0)
            bL = bL * old + tl.sum(p, axis=0)
            mL = m_new

    @triton.jit
    def _bwd_kernel(k_ptr, v_ptr, w_ptr, u_ptr, g_ptr, y_ptr, lse_ptr, carry_ptr,
                    gk_ptr, gv_ptr, gw_ptr, gu_ptr, T, C, NC,
                    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """Row i receives from every t != i the weight
        exp(k_i - (|t-i|-1) w - lse_t): the decayed sums of (g, g y) over t
        with log-weights -lse_t (chunk matrix + left and right carries)."""
        b = tl.program_id(1).to(tl.int64)
        cs, mask_c, jt, jf, dist, diag, w, u = _tile_setup(w_ptr, u_ptr, C, BLOCK_T, BLOCK_C)
        base = b * T * C
        mL = tl.full((BLOCK_C, ), _NEG, tl.float32)
        p1L = tl.zeros((BLOCK_C, ), tl.float32)
        p2L = tl.zeros((BLOCK_C, ), tl.float32)
        d1L = tl.zeros((BLOCK_C, ), tl.float32)
        d2L = tl.zeros((BLOCK_C, ), tl.float32)
        gw_acc = tl.zeros((BLOCK_C, ), tl.float32)
        gu_acc = tl.zeros((BLOCK_C, ), tl.float32)
        for c in range(0, NC):
            ts = c * BLOCK_T + jt
            m2 = (ts < T)[:, None] & mask_c[None, :]
            off = base + ts[:, None] * C + cs[None, :]
            k = tl.load(k_ptr + off, mask=m2, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + off, mask=m2, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + off, mask=m2, other=0.0).to(tl.float32)
            y = tl.load(y_ptr + off, mask=m2, other=0.0)
            lse = tl.load(lse_ptr + off, mask=m2, other=0.0)
            gy = g * y
            xq = tl.where(m2, -lse, _NEG)
            st = carry_ptr + (b * NC + c) * 5 * C + cs
            mR = tl.load(st, mask=mask_c, other=_NEG)
            p1R = tl.load(st + C, mask=mask_c, other=0.0)
            p2R = tl.load(st + 2 * C, mask=mask_c, other=0.0)
            d1R = tl.load(st + 3 * C, mask=mask_c, other=0.0)
            d2R = tl.load(st + 4 * C, mask=mask_c, other=0.0)

            # row i, column t (t != i)
            G = tl.where(diag, _NEG, xq[None, :, :] - dist * w[None, None, :])
            cl = mL[None, :] - jf * w[None, :]
            jr = BLOCK_T - 1 - jf
            cr = mR[None, :] - jr * w[None, :]
            M = tl.maximum(tl.max(G, axis=1), tl.maximum(cl, cr))
            W = tl.exp(G - M[:, None, :])
            fl = tl.exp(cl - M)
            fr = tl.exp(cr - M)
            Wg = W * g[None, :, :]
            Wgy = W * gy[None, :, :]
            P = tl.sum(Wg, axis=1) + p1L[None, :] * fl + p1R[None, :] * fr
            Q = tl.sum(Wgy, axis=1) + p2L[None, :] * fl + p2R[None, :] * fr
            dP = (-tl.sum(dist * Wg, axis=1) + (d1L[None, :] - jf * p1L[None, :]) * fl +
                  (d1R[None, :] - jr * p1R[None, :]) * fr)
            dQ = (-tl.sum(dist * Wgy, axis=1) + (d2L[None, :] - jf * p2L[None, :]) * fl +
                  (d2R[None, :] - jr * p2R[None, :]) * fr)
            fk = tl.exp(tl.where(m2, k, _NEG) + M)      # k_i + M_i <= 0
            qd = g * tl.exp(u[None, :] + k - lse)      # g_i p[i, i]
            gv = fk * P + qd
            gk = fk * (v * P - Q) + qd * (v - y)
            tl.store(gv_ptr + off, gv.to(gv_ptr.dtype.element_ty), mask=m2)
            tl.store(gk_ptr + off, gk.to(gk_ptr.dtype.element_ty), mask=m2)
            gw_acc += tl.sum(tl.where(m2, fk * (v * dP - dQ), 0.0), axis=0)
            gu_acc += tl.sum(tl.where(m2, qd * (v - y), 0.0), axis=0)

            # move the left carry (and its d/dw) past this chunk
            jl = BLOCK_T - 1 - jf
            e = xq - jl * w[None, :]
            m_new = tl.maximum(mL - BLOCK_T * w, tl.max(e, axis=0))
            old = tl.exp(mL - BLOCK_T * w - m_new)
            p = tl.exp(e - m_new[None, :])
            d1L = (d1L - BLOCK_T * p1L) * old - tl.sum(jl * p * g, axis=0)
            d2L = (d2L - BLOCK_T * p2L) * old - tl.sum(jl * p * gy, axis=0)
            p1L = p1L * old + tl.sum(p * g, axis=0)
            p2L = p2L * old + tl.sum(p * gy, axis=0)
            mL = m_new
        tl.store(gw_ptr + b * C + cs, gw_acc, mask=mask_c)
        tl.store(gu_ptr + b * C + cs, gu_acc, mask=mask_c)


def check_triton_inputs(w, u, k, v):
    _check('bi_wkv', [('k', k), ('w', w), ('u', u), ('v', v)])


def _grid(B, C):
    block_c = min(MAX_BLOCK_C, triton.next_power_of_2(C))
    return (triton.cdiv(C, block_c), B), block_c


def _on_device(t):
    """Launch on the tensor's GPU (not only the current one)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _forward(w, u, k, v, y, lse):
    """Right carries, then the forward pass writing ``y`` (and ``lse``)."""
    B, T, C = k.shape
    grid, bc = _grid(B, C)
    NC = triton.cdiv(T, BLOCK_T)
    carry = torch.empty((B, NC, 3, C), device=k.device, dtype=torch.float32)
    _right_carry_kernel[grid](k, v, v, w, carry, T, C, NC, BLOCK_T=BLOCK_T, BLOCK_C=bc,
                              BWD=False, NS=3)
    _fwd_kernel[grid](k, v, w, u, carry, y, lse if lse is not None else y, T, C, NC,
                      BLOCK_T=BLOCK_T, BLOCK_C=bc, WRITE_LSE=lse is not None)


class BiWKVTritonFn(torch.autograd.Function):
    """k, v contiguous (B, T, C); w, u contiguous fp32 (C,)."""

    @staticmethod
    def forward(ctx, w, u, k, v):
        y = torch.empty(k.shape, device=k.device, dtype=v.dtype)
        with _on_device(k):
            _forward(w, u, k, v, y, None)
        ctx.save_for_backward(w, u, k, v)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        w, u, k, v = ctx.saved_tensors
        B, T, C = k.shape
        dev = k.device
        y32 = torch.empty((B, T, C), device=dev, dtype=torch.float32)
        lse = torch.empty((B, T, C), device=dev, dtype=torch.float32)
        with _on_device(k):
            _forward(w, u, k, v, y32, lse)
            gy = gy.contiguous()
            grid, bc = _grid(B, C)
            NC = triton.cdiv(T, BLOCK_T)
            carry = torch.empty((B, NC, 5, C), device=dev, dtype=torch.float32)
            _right_carry_kernel[grid](lse, gy, y32, w, carry, T, C, NC, BLOCK_T=BLOCK_T,
                                      BLOCK_C=bc, BWD=True, NS=5)
            gk = torch.empty_like(k)
            gv = torch.empty_like(v)
            gw = torch.empty((B, C), device=dev, dtype=torch.float32)
            gu = torch.empty((B, C), device=dev, dtype=torch.float32)
            _bwd_kernel[grid](k, v, w, u, gy, y32, lse, carry, gk, gv, gw, gu, T, C, NC,
                              BLOCK_T=BLOCK_T, BLOCK_C=bc)
        return gw.sum(0), gu.sum(0), gk, gv


def bi_wkv_triton(w, u, k, v):
    """Bidirectional WKV with Triton kernels; arguments as
    :func:`.naive.bi_wkv_naive`. Inputs fp32/fp16/bf16 on CUDA (or on the CPU
    under ``TRITON_INTERPRET=1``); math in fp32; output in ``v.dtype``;
    gradients in the dtypes of their inputs."""
    check_wkv_inputs(w, u, k, v)
    check_triton_inputs(w, u, k, v)
    y = BiWKVTritonFn.apply(w.float().contiguous(), u.float().contiguous(), k.contiguous(),
                            v.contiguous())
    return y
