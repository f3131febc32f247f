"""SS2D's torch path, scanned straight from the spatial map (the CPU path).

Cross-scan -> selective scan -> cross-merge writes four ``(Bt, P, H*W)``
copies of every input, pads and transposes each into the chunk layout of
:mod:`..selective_scan.chunked`, and flips and merges four outputs back: on
VMamba-T at 512x512 the copies cost more than the recurrence.  Here the
chunks are the map's own rows and columns, so every input needs at most one
transpose:

* directions 0 / 2 (row-major, forwards / backwards) run on the *row
  layout* ``(W, Bt, P, H)``: element ``[t, ..., c]`` is pixel ``(c, t)``,
  i.e. step ``t`` of chunk ``c`` of the row-major sequence (chunk = row,
  ``T = W``, ``nC = H``);
* directions 1 / 3 (column-major) run on the *column layout*
  ``(H, Bt, P, W)``: element ``[t, ..., c]`` is pixel ``(t, c)`` (chunk =
  column, ``T = H``, ``nC = W``).

The backwards directions are reverse recurrences ``h_s = a_s h_{s+1} + b_s``
over the same layout, not flipped copies.  Each direction is solved by the
chunked scan's three passes (chunk end states from a zero state, the
log-step carry scan over chunks, the states again from the true carries)
with its readout ``C . h`` accumulated into its layout's output; the two
layouts are transposed back and summed once, with ``sum_k D_k u``.
Everything is computed in fp32 (fp64 for fp64 inputs), only decays
``a = exp(dt A) <= 1`` and their products are multiplied, and nothing is
divided.

This is the eager forward.  Its backward (:class:`SS2DTorchFn`) maps the
incoming gradient to scan order and runs the chunked scan's written-out
backward, which recomputes from the inputs; traced graphs (ONNX) take the
composed path, whose loops have a fixed length (the step loops here have
``H`` and ``W`` steps, which a tracer would freeze).
"""
import torch

from .._common import compute_dtype
from ..cross_scan import cross_scan
from ..selective_scan.chunked import _backward as _scan_backward
from ..selective_scan.chunked import _carry_scan, default_chunk_size

K = 4


def to_scan_order(t: torch.Tensor) -> torch.Tensor:
    """(Bt, 4, C, H, W) spatial -> (Bt, 4, C, H*W) each in its direction's order."""
    row = t[:, 0::2].flatten(3)                     # directions 0 and 2
    col = t[:, 1::2].transpose(-1, -2).flatten(3)   # directions 1 and 3
    return torch.stack([row[:, 0], col[:, 0], row[:, 1].flip(-1), col[:, 1].flip(-1)], 1)

# ---------------------------------------------------------------- one direction
def _direction(a, b, C, y, reverse):
    """Solve one direction on its layout and add its readout to ``y``.

    ``a``, ``b``: ``(Bt, T, P, N, nC)`` decays and inputs; ``C``: ``(Bt, T,
    1, N, nC)``; ``y``: ``(Bt, T, P, nC)``, accumulated in place.  Forwards:
    ``h_t = a_t h_{t-1} + b_t`` along ``t`` then ``c``; ``reverse``:
    ``h_t = a_t h_{t+1} + b_t`` from the last step of the last chunk."""
    T, N = a.shape[1], a.shape[-2]
    if N == 1:  # no state axis: one multiply-add per step for the readout
        a, b, C = a.squeeze(-2), b.squeeze(-2), C.squeeze(-2)
    steps = list(range(T - 1, -1, -1) if reverse else range(T))
    a_rows, b_rows, C_rows, y_rows = a.unbind(1), b.unbind(1), C.unbind(1), y.unbind(1)
    # pass 1: every chunk's end state from a zero state
    h = b_rows[steps[0]].clone()
    for t in steps[1:]:
        torch.addcmul(b_rows[t], a_rows[t], h, out=h)
    # pass 2: the state entering every chunk, by the log-step scan over chunks
    h = _carry_scan(a.prod(1), h, reverse)
    # pass 3: the states from the true carries, read out as they go
    hc = None if N == 1 else torch.empty_like(h)
    for t in steps:
        torch.addcmul(b_rows[t], a_rows[t], h, out=h)
        if N == 1:
            y_rows[t].addcmul_(h, C_rows[t])
        else:
            y_rows[t].add_(torch.mul(h, C_rows[t], out=hc).sum(-2))


def _to_layout(src, dst, rows):
    """Copy ``src`` ``(Bt, ch, H, W)`` into ``dst``, its row layout ``(Bt, W,
    ch, H)`` or column layout ``(Bt, H, ch, W)``.  The row layout is a 2-D
    transpose per image, which ``copy_`` does blockwise."""
    Bt, ch, H, W = src.shape
    if not rows:
        dst.copy_(src.transpose(1, 2))
    elif src.dtype == dst.dtype:
        for i in range(Bt):
            dst[i].view(W, ch * H).copy_(src[i].reshape(ch * H, W).t())
    else:  # casting: no blockwise transpose
        dst.copy_(src.permute(0, 3, 1, 2))
    return dst


def _from_layout(y, rows):
    """``y`` in its layout back to ``(Bt, P, H, W)``: a new tensor from the
    row layout (2-D transposes), a view of the column layout."""
    if not rows:
        return y.transpose(1, 2)
    Bt, T, P, nC = y.shape
    out = y.new_empty(Bt, P, nC, T)
    for i in range(Bt):
        out[i].view(P * nC, T).copy_(y[i].view(T, P * nC).t())
    return out


def ss2d_forward(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """The merged four-direction scan, ``(Bt, P, H, W)`` in the compute dtype
    (arguments as :func:`..ss2d_scan`; inputs already validated)."""
    cd = compute_dtype(x, delta, A, B, C, D, delta_bias)
    Bt, P, H, W = x.shape
    N = A.shape[-1]
    dt = delta.reshape(Bt, K, P, H, W)
    bias = None if delta_bias is None else delta_bias.to(cd).reshape(K, P, 1)
    A_ = A.to(cd).reshape(K, P, N, 1)
    x_, B_, C_ = x.to(cd), B.to(cd), C.to(cd)
    out = None
    for dirs, rows in (((0, 2), True), ((1, 3), False)):
        # row layout (Bt, W, ., H): step t of chunk c = pixel (c, t), the
        # row-major order; column layout (Bt, H, ., W): pixel (t, c)
        T, nC = (W, H) if rows else (H, W)
        u = _to_layout(x_, x_.new_empty(Bt, T, P, nC), rows)
        y = torch.zeros_like(u)
        dt_k, a, b = torch.empty_like(u), torch.empty_like(u), torch.empty_like(u)
        if N > 1:
            a = a.new_empty(Bt, T, P, N, nC)
            b = torch.empty_like(a)
        for k in dirs:                # two directions share u, y and the buffers
            _to_layout(dt[:, k], dt_k, rows)             # raw step sizes, then in place:
            if bias is not None:
                dt_k.add_(bias[k])
            if delta_softplus:
                torch.ops.aten.softplus.out(dt_k, 1, 20, out=dt_k)
            B_k = _to_layout(B_[:, k], B_.new_empty(Bt, T, N, nC), rows).unsqueeze(2)
            C_k = _to_layout(C_[:, k], C_.new_empty(Bt, T, N, nC), rows).unsqueeze(2)
            if N == 1:
                torch.mul(dt_k, A_[k, :, 0], out=a).exp_()
                torch.mul(dt_k, u, out=b).mul_(B_k[..., 0, :])
                a_k, b_k = a.unsqueeze(-2), b.unsqueeze(-2)
            else:
                a_k = torch.mul(dt_k.unsqueeze(-2), A_[k], out=a).exp_()
                b_k = torch.mul((dt_k * u).unsqueeze(-2), B_k, out=b)
            _direction(a_k, b_k, C_k, y, reverse=k >= 2)  # directions 2, 3: backwards
        out = _from_layout(y, rows) if out is None else out.add_(_from_layout(y, rows))
    if D is not None:
        out.addcmul_(x_, D.to(cd).reshape(K, P).sum(0).reshape(P, 1, 1))
    return out


# ---------------------------------------------------------------- autograd
class SS2DTorchFn(torch.autograd.Function):
    """:func:`ss2d_forward`, fp32 out, with the chunked scan's backward in
    cross-scan order (the gradients of the composed path; saves the inputs)."""

    @staticmethod
    def forward(ctx, x, delta, A, B, C, D, delta_bias, delta_softplus):
        ctx.save_for_backward(x, delta, A, B, C, D, delta_bias)
        ctx.delta_softplus = delta_softplus
        return ss2d_forward(x, delta, A, B, C, D, delta_bias,
                            delta_softplus).to(torch.float32)

    @staticmethod
    def backward(ctx, dout):
        x, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        Bt, P, H, W = x.shape
        L = H * W
        with torch.enable_grad():
            # the composed path's inputs, in scan order, as functions of ours
            leaves = [t.detach().requires_grad_(n) for t, n in
                      zip((x, delta, B, C), (needs[0], needs[1], needs[3], needs[4]))]
            xs = cross_scan(leaves[0]).reshape(Bt, K * P, L)
            ds = to_scan_order(leaves[1].reshape(Bt, K, P, H, W)).reshape(Bt, K * P, L)
            Bs, Cs = to_scan_order(leaves[2]), to_scan_order(leaves[3])
        # cross-merge's adjoint is cross-scan
        dys = cross_scan(dout).reshape(Bt, K * P, L)
        du, ddt, dA, dB, dC, dD, _, dbias = _scan_backward(
            xs.detach(), ds.detach(), A, Bs.detach(), Cs.detach(), D, None, delta_bias,
            ctx.delta_softplus, default_chunk_size(A.shape[-1]), dys, None)
        outs = [(xs, du, 0), (ds, ddt, 1), (Bs, dB, 3), (Cs, dC, 4)]
        outs = [(o, g, i) for o, g, i in outs if needs[i]]
        grads = [None] * 8
        if outs:
            got = torch.autograd.grad([o for o, _, _ in outs], [leaves[(0, 1, None, 2, 3)[i]]
                                                                 for _, _, i in outs],
                                      [g for _, g, _ in outs])
            for (_, _, i), g in zip(outs, got):
                grads[i] = g
        grads[2] = dA if needs[2] else None
        grads[5] = dD if needs[5] else None
        grads[6] = dbias if needs[6] else None
        return tuple(grads)


def ss2d_scan_torch(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    return SS2DTorchFn.apply(x, delta, A, B, C, D, delta_bias, bool(delta_softplus))
