"""Chunked selective scan in pure PyTorch (the CPU path, and what exports).

The sequence of length ``L`` is cut into ``nC`` chunks of ``T`` steps (the
last one zero-padded) and laid out *time-major inside the chunk*:
``(T, ..., nC)``, so that step ``t`` of every chunk, channel and state is one
contiguous row.  The linear recurrence

    h_t = a_t * h_{t-1} + b_t,      a_t = exp(delta_t A) <= 1,  b_t = delta_t B_t u_t

is then solved in three vectorised passes:

1. *chunk summaries*: a running ``h`` over the ``T`` rows from a zero state
   gives each chunk's end state ``E_c``; ``a.prod(0)`` its decay ``P_c``;
2. *carries*: the chunk-level recurrence ``S_c = P_c S_{c-1} + E_c`` by a
   log-step (Hillis-Steele) scan over the chunk axis, ``ceil(log2 nC)``
   rounds of elementwise work on ``L / T`` values per channel and state;
3. *states*: the ``T`` rows again, now from the true incoming state
   ``S_{c-1}``; the forward reads ``y_t = C_t . h_t`` off each row as it goes
   and never stores the states.

Work is ``O(L)`` per channel and state (plus ``O(L/T log)`` for the
carries), and the number of PyTorch calls is ``~2T + log2(nC)`` per scan,
independent of ``L``.  Only factors ``a_t <= 1`` (and their products) are
ever multiplied: nothing computes ``exp(cumsum)`` and divides, so nothing can
overflow.  Padded steps have ``delta = 0``, i.e. ``a = 1`` and ``b = 0``: they
carry the last state unchanged and receive no gradient.

The backward is written out (:class:`SelectiveScanChunkedFn`): it recomputes
the states with the same passes and runs the adjoint recurrence
``g_t = dh_t + a_{t+1} g_{t+1}`` backwards with the mirrored passes.  It
saves only the inputs; its transient memory is a few ``(Bt, Dm, N, L)``
tensors.

Export.  When traced (``torch.jit.trace`` / ``torch.onnx.export``) the same
arithmetic runs without in-place writes, the step loops have the static
length ``T``, and the carry scan runs a fixed :data:`TRACE_CARRY_ROUNDS`
rounds whose shifts clamp at the sequence start, so extra rounds are exact
no-ops: nothing in the graph depends on ``L``, and one exported graph serves
any sequence length up to ``T * 2**TRACE_CARRY_ROUNDS`` (about a million
tokens at the traced default ``T =`` :data:`TRACE_CHUNK_SIZE` ``= 16`` when
no ``chunk_size`` is given).
"""
import math

import torch
import torch.nn.functional as F

from .._common import compute_dtype
from .._common import tracing as _tracing
from ._common import check_chunk_size, check_scan_inputs

DEFAULT_CHUNK_SIZE = 64
#: log-step rounds of the chunk-carry scan in a traced graph: sequences of up
#: to ``chunk_size * 2**TRACE_CARRY_ROUNDS`` steps are exact
TRACE_CARRY_ROUNDS = 16
#: chunk length of a traced graph when none is given: each pass unrolls its
#: ``T`` steps into the graph, and at 16 a Vim export takes half the time it
#: takes at 64 (one graph serves up to ``16 * 2**16`` steps)
TRACE_CHUNK_SIZE = 16


def default_chunk_size(d_state: int) -> int:
    """Default chunk length ``T`` for state size ``N``.

    Each step row holds ``Bt * Dm * N * nC`` values; ``T`` trades the number
    of PyTorch calls (``~2T`` per pass) against row length.  It does not
    depend on ``N``.  64 is a first choice, not yet tuned: single-thread
    timings on a loaded 2-core machine put 16 to 128 within noise of each
    other at VMamba-T's and Vim-S's sizes.
    """
    del d_state
    return DEFAULT_CHUNK_SIZE


# ---------------------------------------------------------------- layout
def _num_chunks(L, T):
    return (L + T - 1) // T


def to_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """``(..., L)`` -> ``(T, ..., nC)``, zero-padded to ``nC * T`` steps:
    element ``[t, ..., c]`` is step ``c * T + t``."""
    L = x.shape[-1]
    nC = _num_chunks(L, T)
    pad = nC * T - L
    if _tracing() or pad:
        x = F.pad(x, (0, pad))
    x = x.reshape(*x.shape[:-1], nC, T)
    d = x.dim()  # explicit non-negative permutation (what ONNX's Transpose accepts)
    return x.permute(d - 1, *range(d - 1)).contiguous()


def from_chunks(x: torch.Tensor, L) -> torch.Tensor:
    """Inverse of :func:`to_chunks`: ``(T, ..., nC)`` -> ``(..., L)``."""
    x = x.permute(*range(1, x.dim()), 0)
    return x.reshape(*x.shape[:-2], -1)[..., :L]


# ---------------------------------------------------------------- scans
def _along(dim, s):
    """An index that applies the slice ``s`` to axis ``dim`` (negative axes
    count from the end, as everywhere in torch)."""
    if dim < 0:
        return (Ellipsis, s) + (slice(None),) * (-1 - dim)
    return (slice(None),) * dim + (s,)


def _shift(x, k, fill, reverse, dim=-1):
    """``x`` moved ``k`` places along axis ``dim`` (towards the end, or the
    start if ``reverse``), the vacated places set to ``fill``.  ``k`` may
    exceed the length: the result is then all ``fill``.

    Traced, the shift is a concatenation whose slices clamp (the length is
    not known to the graph); otherwise one pad of the kept slice, which
    inductor fuses into the consumer (a concatenation it materialises)."""
    if _tracing():
        if reverse:
            return torch.cat([x[_along(dim, slice(k, None))],
                              torch.full_like(x[_along(dim, slice(None, k))], fill)], dim)
        return torch.cat([torch.full_like(x[_along(dim, slice(None, k))], fill),
                          x[_along(dim, slice(None, -k))]], dim)
    k = min(k, x.shape[dim])
    after = (0, 0) * (x.dim() - 1 - dim % x.dim())
    if reverse:
        return F.pad(x[_along(dim, slice(k, None))], after + (0, k), value=fill)
    return F.pad(x[_along(dim, slice(None, x.shape[dim] - k))], after + (k, 0), value=fill)


def _carry_scan(P, E, reverse=False, dim=-1):
    """Inclusive scan ``S_c = P_c S_{c-1} + E_c`` over axis ``dim`` (the last
    by default; from the right if ``reverse``), by log-step rounds; returns
    the *exclusive* carry ``S_{c-1}`` (``S_{c+1}``), zero at the boundary."""
    nC = E.shape[dim]
    rounds = TRACE_CARRY_ROUNDS if _tracing() else math.ceil(math.log2(nC)) if nC > 1 else 0
    k = 1
    for _ in range(rounds):
        E = torch.addcmul(E, P, _shift(E, k, 0.0, reverse, dim))
        P = P * _shift(P, k, 1.0, reverse, dim)
        k *= 2
    return _shift(E, 1, 0.0, reverse, dim)


def _chunk_ends(a, b, reverse=False):
    """End state of every chunk from a zero state (pass 1); ``a``, ``b``:
    ``(T, ..., nC)``.  Forward: ``h_t = a_t h_{t-1} + b_t`` up to ``t = T-1``.
    Reverse: ``h_t = b_t + a_{t+1} h_{t+1}`` down to ``t = 0``, then times
    ``a_0`` (what crosses into the previous chunk)."""
    T = a.shape[0]
    inplace = not _tracing()
    if not reverse:
        h = b[0].clone() if inplace else b[0]
        for t in range(1, T):
            h = torch.addcmul(b[t], a[t], h, out=h) if inplace else torch.addcmul(b[t], a[t], h)
        return h
    h = b[T - 1].clone() if inplace else b[T - 1]
    for t in range(T - 2, -1, -1):
        h = torch.addcmul(b[t], a[t + 1], h, out=h) if inplace else torch.addcmul(b[t], a[t + 1], h)
    return a[0] * h


def _chunk_states(a, b, carry, out=None, reverse=False):
    """Every state (pass 3): the recurrences of :func:`_chunk_ends` from the
    incoming ``carry`` (``(..., nC)``).  Writes into ``out`` (may be ``b``)
    in eager mode when given; otherwise, and when traced, stacks new rows."""
    T = a.shape[0]
    order = range(T - 1, -1, -1) if reverse else range(T)
    functional = out is None or _tracing()
    rows = [None] * T
    prev = carry
    for t in order:
        dst = None if functional else out[t]
        if reverse and t == T - 1:  # the last row receives the carry as is
            row = torch.add(b[t], prev, out=dst) if dst is not None else b[t] + prev
        else:
            mult = a[t + 1] if reverse else a[t]
            row = (torch.addcmul(b[t], mult, prev, out=dst) if dst is not None else
                   torch.addcmul(b[t], mult, prev))
        rows[t] = row
        prev = row
    return torch.stack(rows, 0) if functional else out


def _carries(a, b, reverse=False):
    """Passes 1 and 2: the state entering every chunk ``(..., nC)`` (from the
    right if ``reverse``)."""
    return _carry_scan(a.prod(0), _chunk_ends(a, b, reverse), reverse)


def linear_scan_chunks(a, b):
    """Solve ``h_t = a_t h_{t-1} + b_t`` (``h_{-1} = 0``) on chunk layout
    ``(T, ..., nC)``.  Returns ``(h, carry)``: all states, and the state
    entering each chunk ``(..., nC)``."""
    carry = _carries(a, b)
    return _chunk_states(a, b, carry), carry


def reverse_scan_chunks(a, g, out=None):
    """Solve the adjoint ``x_t = g_t + a_{t+1} x_{t+1}`` (``x`` zero past the
    end) on chunk layout; ``a`` is the forward recurrence's decay."""
    return _chunk_states(a, g, _carries(a, g, reverse=True), out, reverse=True)


# ---------------------------------------------------------------- the op
def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cd, T):
    """Inputs in compute dtype and chunk layout.

    Returns ``dict`` with ``dt_raw`` (natural layout, biased, before softplus),
    ``dt``/``u``: (T, Bt, G, P, 1, nC); ``B``/``C``: (T, Bt, G, 1, N, nC);
    ``A``: (G, P, N, 1); ``D``: (G, P, 1) or None; ``z``: (Bt, G, P, L) or
    None."""
    Bt, Dm, L = u.shape
    G, N = B.shape[1], A.shape[1]
    P = Dm // G
    dt_raw = delta.to(cd)
    if delta_bias is not None:
        dt_raw = dt_raw + delta_bias.to(cd).unsqueeze(-1)
    dt = F.softplus(dt_raw) if delta_softplus else dt_raw
    grouped = lambda t: t.reshape(Bt, G, P, L)  # noqa: E731
    return dict(
        dt_raw=dt_raw,
        dt=to_chunks(grouped(dt).unsqueeze(-2), T),
        u=to_chunks(grouped(u.to(cd)).unsqueeze(-2), T),
        B=to_chunks(B.to(cd).unsqueeze(2), T),
        C=to_chunks(C.to(cd).unsqueeze(2), T),
        A=A.to(cd).reshape(G, P, N, 1),
        D=None if D is None else D.to(cd).reshape(G, P, 1),
        z=None if z is None else grouped(z.to(cd)),
        L=L, shape=(Bt, G, P, N))


def _decay_and_input(p):
    a = torch.exp(p['dt'] * p['A'])              # (T, Bt, G, P, N, nC)
    b = (p['dt'] * p['u']) * p['B']
    return a, b


def _chunk_outputs(a, b, carry, C):
    """Pass 3 of the forward fused with the readout: ``y_t = C_t . h_t`` row
    by row, so the states themselves are never stored.  Returns ``y``
    ``(T, Bt, G, P, nC)`` and the states after each chunk's last row."""
    T, N = a.shape[0], a.shape[-2]
    if _tracing():
        rows, h = [], carry
        for t in range(T):
            h = torch.addcmul(b[t], a[t], h)
            rows.append((h * C[t]).sum(-2))
        return torch.stack(rows, 0), h
    # eager: every row written into preallocated buffers (no allocation per step)
    y = a.new_empty((T, *b.shape[1:-2], b.shape[-1]))
    h = carry.clone()
    hc = None if N == 1 else torch.empty_like(h)
    for t in range(T):
        torch.addcmul(b[t], a[t], h, out=h)
        if N == 1:
            torch.mul(h.squeeze(-2), C[t].squeeze(-2), out=y[t])
        else:
            torch.sum(torch.mul(h, C[t], out=hc), -2, out=y[t])
    return y, h


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype, T):
    cd = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    p = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cd, T)
    a, b = _decay_and_input(p)
    y, h_end = _chunk_outputs(a, b, _carries(a, b), p['C'])
    last = h_end[..., -1]                        # padded steps carry the state
    y = from_chunks(y, p['L'])                   # (Bt, G, P, L)
    Bt, G, P, N = p['shape']
    if p['D'] is not None:
        y = torch.addcmul(y, p['D'], u.to(cd).reshape(Bt, G, P, -1))
    if p['z'] is not None:
        y = y * F.silu(p['z'])
    return (y.reshape(Bt, G * P, -1).to(out_dtype).contiguous(),
            last.reshape(Bt, G * P, N).contiguous())


class SelectiveScanChunkedFn(torch.autograd.Function):
    """The chunked scan with a hand-written backward that recomputes the
    states; saves only its inputs.

    ``B`` and ``C`` must already be 4-D ``(Bt, G, N, L)``; inputs must be
    validated by the caller (see :func:`selective_scan_chunked`).
    Outputs ``(out, last_state)``; both are differentiable.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_fp32,
                chunk_size):
        ctx.set_materialize_grads(False)
        out_dtype = torch.float32 if out_fp32 else u.dtype
        out, last = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                             out_dtype, chunk_size)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        ctx.chunk_size = chunk_size
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        grads = _backward(u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus,
                          ctx.chunk_size, dout, dlast)
        needs = ctx.needs_input_grad
        grads = [g if n else None for g, n in zip(grads, needs)]
        return (*grads, None, None, None)


@torch.no_grad()
def _backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, T, dout, dlast):
    cd = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    p = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cd, T)
    Bt, G, P, N = p['shape']
    L = p['L']
    u_nat = u.to(cd).reshape(Bt, G, P, L)
    a, b = _decay_and_input(p)
    h, carry = linear_scan_chunks(a, b)          # b is kept

    # output side: y0 = C.h + D u;  out = y0 * silu(z)
    if dout is None:
        dy0 = torch.zeros((Bt, G, P, L), dtype=cd, device=u.device)
    else:
        dy0 = dout.to(cd).reshape(Bt, G, P, L)
    dz = None
    if p['z'] is not None:
        zs = p['z']
        sig = torch.sigmoid(zs)
        silu = zs * sig
        y0 = from_chunks((h * p['C']).sum(-2), L)
        if p['D'] is not None:
            y0 = torch.addcmul(y0, p['D'], u_nat)
        dz = dy0 * y0 * (sig * (1 + zs * (1 - sig)))
        dy0 = dy0 * silu
    dy0_c = to_chunks(dy0.unsqueeze(-2), T)      # (T, Bt, G, P, 1, nC)

    dC = (dy0_c * h).sum(3, keepdim=True)        # over P: (T, Bt, G, 1, N, nC)
    dh = dy0_c * p['C']
    if dlast is not None:
        dh[-1, ..., -1] += dlast.to(cd).reshape(Bt, G, P, N)
    g = reverse_scan_chunks(a, dh, out=dh)

    # a_t h_{t-1}: the previous state, the chunk carry at t = 0
    h_prev = torch.cat([carry.unsqueeze(0), h[:-1]], 0)
    dlogit = g * a * h_prev                      # d(dt A) per (t, state)
    gB = (g * p['B']).sum(-2, keepdim=True)      # (T, Bt, G, P, 1, nC)
    ddt = (dlogit * p['A']).sum(-2, keepdim=True) + gB * p['u']
    du = gB * p['dt']
    dB = (g * (p['dt'] * p['u'])).sum(3, keepdim=True)
    dA = (dlogit * p['dt']).sum(dim=(0, 1, 5))   # (G, P, N)

    ddt = from_chunks(ddt.squeeze(-2), L)        # (Bt, G, P, L)
    du = from_chunks(du.squeeze(-2), L)
    dD = None
    if p['D'] is not None:
        du = torch.addcmul(du, p['D'], dy0)
        dD = (dy0 * u_nat).sum(dim=(0, 3))
    if delta_softplus:
        ddt = ddt * torch.sigmoid(p['dt_raw'].reshape(Bt, G, P, L))
    dbias = None if delta_bias is None else ddt.sum(dim=(0, 3)).reshape(-1)

    def nat(t, like, shape):
        return None if like is None else t.reshape(shape).to(like.dtype)

    return (nat(du, u, u.shape), nat(ddt, delta, delta.shape),
            nat(dA, A, A.shape), nat(from_chunks(dB.squeeze(3), L), B, B.shape),
            nat(from_chunks(dC.squeeze(3), L), C, C.shape),
            nat(dD, D, (-1,)), nat(dz, z, z.shape if z is not None else None),
            nat(dbias, delta_bias, (-1,)))


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, return_last_state=False,
                           out_fp32=False, chunk_size=None):
    """Chunked selective scan; see :func:`selective_scan_naive` for the args.

    Args:
        chunk_size: chunk length ``T``; the last chunk is zero-padded.
            ``None`` uses :func:`default_chunk_size`.
    """
    meta = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, out_fp32)
    traced = _tracing()
    T = check_chunk_size(chunk_size, TRACE_CHUNK_SIZE if traced else
                         default_chunk_size(meta.d_state))
    if traced:
        # traced / exported: plain functional ops, no autograd.Function node
        out, last = _forward(u, delta, A, meta.B, meta.C, D, z, delta_bias,
                             bool(delta_softplus), meta.out_dtype, T)
    else:
        out, last = SelectiveScanChunkedFn.apply(u, delta, A, meta.B, meta.C, D, z,
                                                 delta_bias, bool(delta_softplus),
                                                 bool(out_fp32), T)
    if return_last_state:
        return out, last
    return out
