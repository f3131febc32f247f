"""Chunked selective scan in pure PyTorch (the default CPU path).

The sequence is split into chunks of ``T`` steps.  Inside a chunk the linear
recurrence ``h_t = a_t * h_{t-1} + b_t`` (``a_t = exp(delta_t A)``,
``b_t = delta_t B_t u_t``) is solved by a vectorised log-step scan
(Hillis-Steele): after round ``k`` every position holds the composition of the
``2^k`` steps ending there,

    (a, b)_t  <-  (a_t * a_{t-s},  a_t * b_{t-s} + b_t)      for s = 1, 2, 4, ...

so ``ceil(log2 T)`` rounds of elementwise work give every ``h_t`` of the chunk
(with a zero incoming state) and the decay ``prod_{s<=t} a_s`` from the chunk
start.  Only per-step factors ``a_t = exp(delta_t A) <= 1`` are ever
multiplied: nothing computes ``exp(cumsum)`` and divides, so nothing can
overflow.  Work is ``O(T log T)`` per channel and state, memory ``O(T log T)``
for the chunk's autograd graph in the backward.

    h_t   = b~_t + a~_t * h_in,     y_t = C_t . h_t + D u_t,     h_out = h_T

Chunks are chained by a Python loop. The autograd Function keeps only the
inputs and the ``(Bt, Dm, N)`` state entering each chunk; the backward walks
the chunks in reverse, recomputing one chunk at a time with autograd enabled.
Peak memory is one chunk's graph plus ``O(Bt * Dm * N * L / T)`` for the
saved states -- never ``O(Bt * Dm * L * N)`` for the whole sequence.
"""
import torch
import torch.nn.functional as F

from .._common import compute_dtype
from ._common import check_chunk_size, check_scan_inputs

DEFAULT_CHUNK_SIZE = 128


def default_chunk_size(d_state: int) -> int:
    """Default chunk length for state size ``N``.

    One chunk's backward graph holds ``~3 log2(T)`` tensors of
    ``Bt * Dm * N * T`` elements while the number of Python iterations is
    ``L / T``: 128 for N <= 4 (VMamba's d_state=1 models), 64 for N=8, 32 for
    N >= 16.
    """
    return max(32, min(DEFAULT_CHUNK_SIZE, 512 // max(int(d_state), 1)))


def _log_step_scan(a, b):
    """Inclusive scan of ``h_t = a_t h_{t-1} + b_t`` along the last dim with
    ``h_{-1} = 0``.  Returns ``(cumulative a, h)``."""
    T = a.shape[-1]
    k = 1
    while k < T:
        b = torch.cat([b[..., :k], torch.addcmul(b[..., k:], a[..., k:], b[..., :-k])], -1)
        a = torch.cat([a[..., :k], a[..., k:] * a[..., :-k]], -1)
        k *= 2
    return a, b


def _scan_chunk(u, dt, A, B, C, D, z, delta_bias, delta_softplus, h_in):
    """Forward of one chunk, all tensors in the compute dtype.

    Layout (G groups of P channels): ``u, dt, z``: (Bt, G, P, T);
    ``A``: (G, P, N); ``B, C``: (Bt, G, N, T); ``D, delta_bias``: (G, P);
    ``h_in``: (Bt, G, P, N) or None (zero state).
    Returns ``y`` (Bt, G, P, T) and ``h_out`` (Bt, G, P, N).
    """
    if delta_bias is not None:
        dt = dt + delta_bias.unsqueeze(-1)
    if delta_softplus:
        dt = F.softplus(dt)

    a = torch.exp(dt.unsqueeze(-2) * A.unsqueeze(-1))      # (Bt,G,P,N,T)
    b = B.unsqueeze(2) * (dt * u).unsqueeze(-2)            # (Bt,G,P,N,T)
    decay, h = _log_step_scan(a, b)
    if h_in is not None:
        h = torch.addcmul(h, decay, h_in.unsqueeze(-1))
    y = (h * C.unsqueeze(2)).sum(-2)                       # (Bt,G,P,T)
    h_out = h[..., -1]
    if D is not None:
        y = y + D.unsqueeze(-1) * u
    if z is not None:
        y = y * F.silu(z)
    return y, h_out


def _chunk_bounds(L, T):
    return [(s, min(s + T, L)) for s in range(0, L, T)]


class SelectiveScanChunkedFn(torch.autograd.Function):
    """Chunked scan with chunk-wise recomputation in the backward.

    ``B`` and ``C`` must already be 4-D ``(Bt, G, N, L)``; inputs must be
    validated by the caller (see :func:`selective_scan_chunked`).
    Outputs ``(out, last_state)``; both are differentiable.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                out_fp32, chunk_size):
        ctx.set_materialize_grads(False)
        cd = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
        out_dtype = torch.float32 if out_fp32 else u.dtype
        Bt, Dm, L = u.shape
        G, N = B.shape[1], A.shape[1]
        P = Dm // G
        bounds = _chunk_bounds(L, chunk_size)

        A_, D_, bias_ = _grouped_params(A, D, delta_bias, cd, G, P)
        out = torch.empty((Bt, Dm, L), dtype=out_dtype, device=u.device)
        # state entering chunks 1..n-1 (chunk 0 starts from zero)
        states = u.new_empty((len(bounds) - 1, Bt, G, P, N), dtype=cd)
        h = None
        for i, (s0, s1) in enumerate(bounds):
            if i > 0:
                states[i - 1] = h
            u_c, dt_c, B_c, C_c, z_c = _chunk_slices(
                u, delta, B, C, z, s0, s1, cd, G, P)
            y, h = _scan_chunk(u_c, dt_c, A_, B_c, C_c, D_, z_c, bias_,
                               delta_softplus, h)
            out[..., s0:s1] = y.reshape(Bt, Dm, s1 - s0)

        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        ctx.chunk_size = chunk_size
        ctx.compute_dtype = cd
        return out, h.reshape(Bt, Dm, N)

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        needs = ctx.needs_input_grad[:8]
        cd = ctx.compute_dtype
        Bt, Dm, L = u.shape
        G, N = B.shape[1], A.shape[1]
        P = Dm // G
        bounds = _chunk_bounds(L, ctx.chunk_size)

        # full-length grads are written chunk by chunk in the input dtype;
        # grads of the (Dm,)-sized parameters are accumulated in cd
        du = torch.zeros_like(u) if needs[0] else None
        ddelta = torch.zeros_like(delta) if needs[1] else None
        dB = torch.zeros_like(B) if needs[3] else None
        dC = torch.zeros_like(C) if needs[4] else None
        dz = torch.zeros_like(z) if needs[6] else None
        dA = dD = dbias = None

        dh = None if dlast is None else dlast.to(cd).reshape(Bt, G, P, N)
        for i in reversed(range(len(bounds))):
            s0, s1 = bounds[i]
            T = s1 - s0
            with torch.enable_grad():
                A_, D_, bias_ = _grouped_params(A, D, delta_bias, cd, G, P,
                                                leaf=True)
                u_c, dt_c, B_c, C_c, z_c = _chunk_slices(
                    u, delta, B, C, z, s0, s1, cd, G, P, leaf=True)
                h_in = (states[i - 1].detach().requires_grad_(True)
                        if i > 0 else None)
                leaves = [u_c, dt_c, A_, B_c, C_c, D_, z_c, bias_]
                for t, need in zip(leaves, needs):
                    if t is not None:
                        t.requires_grad_(bool(need))
                y, h_out = _scan_chunk(u_c, dt_c, A_, B_c, C_c, D_, z_c,
                                       bias_, ctx.delta_softplus, h_in)

            outputs, grad_outputs = [], []
            if dout is not None:
                outputs.append(y)
                grad_outputs.append(
                    dout[..., s0:s1].to(cd).reshape(Bt, G, P, T))
            if dh is not None:
                outputs.append(h_out)
                grad_outputs.append(dh)
            wrt = [t for t, need in zip(leaves, needs)
                   if need and t is not None]
            if h_in is not None:
                wrt.append(h_in)
            if not outputs or not wrt:
                dh = None
                continue
            grads = list(torch.autograd.grad(outputs, wrt, grad_outputs,
                                             allow_unused=True))
            dh = grads.pop() if h_in is not None else None
            it = iter(grads)
            g = {k: (next(it) if need and t is not None else None)
                 for k, t, need in zip(range(8), leaves, needs)}

            if g[0] is not None:
                du[..., s0:s1] = g[0].reshape(Bt, Dm, T)
            if g[1] is not None:
                ddelta[..., s0:s1] = g[1].reshape(Bt, Dm, T)
            if g[3] is not None:
                dB[..., s0:s1] = g[3]
            if g[4] is not None:
                dC[..., s0:s1] = g[4]
            if g[6] is not None:
                dz[..., s0:s1] = g[6].reshape(Bt, Dm, T)
            if g[2] is not None:
                dA = g[2] if dA is None else dA + g[2]
            if g[5] is not None:
                dD = g[5] if dD is None else dD + g[5]
            if g[7] is not None:
                dbias = g[7] if dbias is None else dbias + g[7]

        def _param_grad(grad, ref, need, shape):
            if not need:
                return None
            if grad is None:
                return torch.zeros_like(ref)
            return grad.reshape(shape).to(ref.dtype)

        dA = _param_grad(dA, A, needs[2], (Dm, N))
        dD = _param_grad(dD, D, needs[5], (Dm,))
        dbias = _param_grad(dbias, delta_bias, needs[7], (Dm,))
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None, None


def _grouped_params(A, D, delta_bias, cd, G, P, leaf=False):
    """(Dm, N) / (Dm,) parameters -> (G, P, N) / (G, P) in dtype cd."""

    def prep(t, shape):
        if t is None:
            return None
        t = t.detach().to(cd).reshape(shape)
        return t.clone() if leaf else t

    N = A.shape[1]
    return prep(A, (G, P, N)), prep(D, (G, P)), prep(delta_bias, (G, P))


def _chunk_slices(u, delta, B, C, z, s0, s1, cd, G, P, leaf=False):
    """Slice [s0, s1) of the sequence inputs, cast to cd, grouped layout."""
    Bt, T = u.shape[0], s1 - s0

    def seq(t):
        if t is None:
            return None
        t = t.detach()[..., s0:s1].to(cd).reshape(Bt, G, P, T)
        # fresh leaves so autograd.grad returns per-chunk grads
        return t.clone() if leaf else t

    def bc(t):
        t = t.detach()[..., s0:s1].to(cd)
        return t.clone() if leaf else t

    return seq(u), seq(delta), bc(B), bc(C), seq(z)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, return_last_state=False,
                           out_fp32=False, chunk_size=None):
    """Chunked selective scan; see :func:`selective_scan_naive` for the args.

    Args:
        chunk_size: chunk length ``T``; the last chunk may be shorter.
            ``None`` uses :func:`default_chunk_size` (128 for N <= 4, down to
            32 for N >= 16). Intra-chunk work grows as ``T log T`` per channel.
    """
    meta = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, out_fp32)
    T = check_chunk_size(chunk_size, default_chunk_size(meta.d_state))
    out, last = SelectiveScanChunkedFn.apply(u, delta, A, meta.B, meta.C, D,
                                             z, delta_bias,
                                             bool(delta_softplus),
                                             bool(out_fp32), T)
    if return_last_state:
        return out, last
    return out
