"""SS2D's torch path, scanned straight from the spatial map (the CPU path).

Cross-scan -> selective scan -> cross-merge writes four ``(Bt, P, H*W)``
copies of every input, pads and transposes each into the chunk layout of
:mod:`..selective_scan.chunked`, and flips and merges four outputs back: on
VMamba-T at 512x512 the copies cost more than the recurrence.  Here the
chunks are pieces of the map's own rows and columns (:class:`_Layout`), so
every input needs one copy into its layout and no per-direction copies:

* directions 0 / 2 (row-major, forwards / backwards) share the *row
  layout*: every row cut into equal chunks of at most 32 pixels where its
  length allows (:func:`chunk_length`), step ``t`` of every chunk one ``(Bt, ., nC)``
  slice; for a contiguous map that is one blockwise 2-D transpose per image;
* directions 1 / 3 (column-major) share the *column layout*: columns cut
  the same way, whole rows copied as blocks.

The backwards directions are reverse recurrences ``h_s = a_s h_{s+1} + b_s``
over the same layout, not flipped copies.  Each direction is solved by the
chunked scan's three passes (chunk end states from a zero state, the
log-step carry scan over chunks, the states again from the true carries)
with its readout ``C . h`` accumulated into its layout's output (the row
layout's starts as the skip term ``sum_k D_k u``); the two layouts are
turned back and summed once.
Everything is computed in fp32 (fp64 for fp64 inputs), only decays
``a = exp(dt A) <= 1`` and their products are multiplied, and nothing is
divided.

This is the eager forward (``MMVB_SS2D_COMPILE=1``: :mod:`.compiled_ss2d`'s
compiled one instead).  Its backward (:class:`SS2DTorchFn`) maps the
incoming gradient to scan order and runs the chunked scan's written-out
backward, which recomputes from the inputs; traced graphs (ONNX) take the
composed path, whose loops have a fixed length (the step loops and chunk
counts here depend on ``H`` and ``W``, which a tracer would freeze).
"""
import torch

from .._common import compute_dtype
from ..cross_scan import cross_scan
from ..selective_scan.chunked import _backward as _scan_backward
from ..selective_scan.chunked import _carry_scan, default_chunk_size
from . import compiled_ss2d
from .compiled_ss2d import ss2d_forward_compiled

K = 4


def to_scan_order(t: torch.Tensor) -> torch.Tensor:
    """(Bt, 4, C, H, W) spatial -> (Bt, 4, C, H*W) each in its direction's order."""
    row = t[:, 0::2].flatten(3)                     # directions 0 and 2
    col = t[:, 1::2].transpose(-1, -2).flatten(3)   # directions 1 and 3
    return torch.stack([row[:, 0], col[:, 0], row[:, 1].flip(-1), col[:, 1].flip(-1)], 1)


#: target length of a chunk: rows and columns longer than this are cut into
#: equal pieces, so each step's op covers ``Bt * P * L / T`` values (big
#: enough for the intra-op threads) and the step loops are short
TARGET_CHUNK = 32
MIN_CHUNK = 8


def chunk_length(n: int) -> int:
    """Chunk length for a row / column of ``n`` pixels: the largest divisor
    of ``n`` not above :data:`TARGET_CHUNK`, or ``n`` itself when that
    divisor is below :data:`MIN_CHUNK` (a prime ``n`` is one chunk)."""
    target = TARGET_CHUNK
    if n <= target:
        return n
    d = max(k for k in range(1, target + 1) if n % k == 0)
    return d if d >= MIN_CHUNK else n


# ---------------------------------------------------------------- one direction
def _direction(a, b, C, y, reverse, accumulate, grid):
    """Solve one direction on its layout and add its readout to ``y``.

    ``a``, ``b``: ``(Bt, T, P, N, nC)`` decays and inputs; ``C``: ``(Bt, T,
    1, N, nC)``; ``y``: ``(Bt, T, P, nC)``, accumulated in place
    (``accumulate=False``: written).  Forwards: ``h_t = a_t h_{t-1} + b_t``
    along ``t``, chunk after chunk; ``reverse``: ``h_t = a_t h_{t+1} + b_t``
    from the last step of the last chunk.  ``grid=(n1, n2)``: the chunk axis
    is laid out as ``(n1, n2)`` but ordered ``(n2, n1)`` in the sequence."""
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
    decay = a.prod(1)
    if grid is None:
        h = _carry_scan(decay, h, reverse)
    else:
        seq = lambda t: t.unflatten(-1, grid).transpose(-1, -2).flatten(-2)  # noqa: E731
        h = _carry_scan(seq(decay), seq(h), reverse)
        h = h.unflatten(-1, grid[::-1]).transpose(-1, -2).flatten(-2)
    # pass 3: the states from the true carries, read out as they go
    hc = None if N == 1 else torch.empty_like(h)
    for t in steps:
        torch.addcmul(b_rows[t], a_rows[t], h, out=h)
        if N == 1:
            if accumulate:
                y_rows[t].addcmul_(h, C_rows[t])
            else:
                torch.mul(h, C_rows[t], out=y_rows[t])
        elif accumulate:
            y_rows[t].add_(torch.mul(h, C_rows[t], out=hc).sum(-2))
        else:
            torch.sum(torch.mul(h, C_rows[t], out=hc), -2, out=y_rows[t])


# ---------------------------------------------------------------- layouts
class _Layout:
    """Where step ``t`` of chunk ``c`` of a direction group lives.

    Rows (directions 0 / 2, row-major order): every row cut into ``n`` chunks
    of ``T = W / n``; chunk ``c = h n + j`` holds pixels ``(h, jT .. jT+T-1)``,
    already in sequence order.  The layout ``(Bt, T, ch, H n)`` is one 2-D
    transpose per image of the map seen as ``(ch H n, T)``, which ``copy_``
    does blockwise.

    Columns (directions 1 / 3, column-major): every column cut into ``n``
    chunks of ``T = H / n``; layout ``(Bt, T, ch, n, W)`` (whole rows: a block
    copy), chunk ``(j, w)`` holds pixels ``(jT .. jT+T-1, w)``; the sequence
    orders the chunks ``(w, j)``, so the carry scan sees them as ``grid``."""

    def __init__(self, rows, H, W):
        self.rows = rows
        self.H, self.W = H, W
        self.T = chunk_length(W if rows else H)
        self.n = (W if rows else H) // self.T
        self.nC = H * self.n if rows else self.n * W
        self.grid = None if rows or self.n == 1 else (self.n, W)

    def empty(self, like, ch):
        return like.new_empty(like.shape[0], self.T, ch, self.nC)

    def write(self, src, dst):
        """``src`` ``(Bt, ch, H, W)`` into ``dst`` (from :meth:`empty`)."""
        Bt, ch = src.shape[:2]
        T, n = self.T, self.n
        if not self.rows:
            dst.view(Bt, T, ch, n, self.W).copy_(src.unflatten(2, (n, T)).permute(0, 3, 1, 2, 4))
        elif src.dtype == dst.dtype and src[0].is_contiguous():
            for i in range(Bt):
                dst[i].view(T, -1).copy_(src[i].view(-1, T).t())
        else:  # casting or strided: no blockwise transpose
            dst.copy_(src.unflatten(3, (n, T)).permute(0, 4, 1, 2, 3).flatten(3))
        return dst

    def read(self, y):
        """``y`` ``(Bt, T, P, nC)`` as ``(Bt, P, H, W)``: a new tensor (rows)
        or a view of ``y`` shaped ``(Bt, P, n, T, W)`` (columns)."""
        Bt, T, P, _ = y.shape
        if not self.rows:
            return y.view(Bt, T, P, self.n, self.W).permute(0, 2, 3, 1, 4)
        out = y.new_empty(Bt, P, self.H, self.W)
        for i in range(Bt):
            out[i].view(-1, T).copy_(y[i].view(T, -1).t())
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
    for dirs, lay in (((0, 2), _Layout(True, H, W)), ((1, 3), _Layout(False, H, W))):
        u = lay.write(x_, lay.empty(x_, P))                  # (Bt, T, P, nC)
        # the row group's output starts as the skip term sum_k D_k u; the
        # column group's first direction writes its readout
        y = torch.empty_like(u)
        if lay.rows and D is not None:
            torch.mul(u, D.to(cd).reshape(K, P).sum(0).reshape(P, 1), out=y)
        dt_k = torch.empty_like(u)
        # decays and inputs: (Bt, T, P, nC), or (Bt, T, P, N, nC) with a state axis
        a = u.new_empty(u.shape if N == 1 else u.shape[:3] + (N, u.shape[3]))
        b = torch.empty_like(a)
        for k in dirs:                # two directions share u, y and the buffers
            lay.write(dt[:, k], dt_k)                        # raw step sizes, then in place:
            if bias is not None:
                dt_k.add_(bias[k])
            if delta_softplus:
                torch.ops.aten.softplus.out(dt_k, 1, 20, out=dt_k)
            B_k = lay.write(B_[:, k], lay.empty(B_, N)).unsqueeze(2)  # (Bt, T, 1, N, nC)
            C_k = lay.write(C_[:, k], lay.empty(C_, N)).unsqueeze(2)
            if N == 1:
                torch.mul(dt_k, A_[k, :, 0], out=a).exp_()
                torch.mul(dt_k, u, out=b).mul_(B_k[..., 0, :])
                a_k, b_k = a.unsqueeze(-2), b.unsqueeze(-2)
            else:
                a_k = torch.mul(dt_k.unsqueeze(-2), A_[k], out=a).exp_()
                b_k = torch.mul((dt_k * u).unsqueeze(-2), B_k, out=b)
            _direction(a_k, b_k, C_k, y, reverse=k >= 2,  # directions 2, 3: backwards
                       accumulate=k >= 2 or (lay.rows and D is not None), grid=lay.grid)
        if out is None:
            out = lay.read(y)
        else:
            out.view(Bt, P, lay.n, lay.T, W).add_(lay.read(y))
    return out


# ---------------------------------------------------------------- autograd
class SS2DTorchFn(torch.autograd.Function):
    """:func:`ss2d_forward`, fp32 out, with the chunked scan's backward in
    cross-scan order (the gradients of the composed path; saves the inputs)."""

    @staticmethod
    def forward(ctx, x, delta, A, B, C, D, delta_bias, delta_softplus):
        ctx.save_for_backward(x, delta, A, B, C, D, delta_bias)
        ctx.delta_softplus = delta_softplus
        # MMVB_SS2D_COMPILE=1: the same forward as one torch.compile'd graph
        forward = ss2d_forward_compiled if compiled_ss2d.enabled() else ss2d_forward
        return forward(x, delta, A, B, C, D, delta_bias, delta_softplus).to(torch.float32)

    @staticmethod
    def backward(ctx, dout):
        x, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        Bt, P, H, W = x.shape
        L = H * W
        #: forward arguments that the layout change to scan order applies to
        spatial = (0, 1, 3, 4)                                  # x, delta, B, C
        with torch.enable_grad():
            # the composed path's inputs, in scan order, as functions of ours
            leaves = [t.detach().requires_grad_(needs[i])
                      for t, i in zip((x, delta, B, C), spatial)]
            xs = cross_scan(leaves[0]).reshape(Bt, K * P, L)
            ds = to_scan_order(leaves[1].reshape(Bt, K, P, H, W)).reshape(Bt, K * P, L)
            Bs, Cs = to_scan_order(leaves[2]), to_scan_order(leaves[3])
        # cross-merge's adjoint is cross-scan
        dys = cross_scan(dout).reshape(Bt, K * P, L)
        du, ddt, dA, dB, dC, dD, _, dbias = _scan_backward(
            xs.detach(), ds.detach(), A, Bs.detach(), Cs.detach(), D, None, delta_bias,
            ctx.delta_softplus, default_chunk_size(A.shape[-1]), dys, None)
        grads = [None, None, dA, None, None, dD, dbias, None]
        want = [j for j, i in enumerate(spatial) if needs[i]]
        if want:  # scan-order gradients back through the layout change
            scan_in, scan_grad = (xs, ds, Bs, Cs), (du, ddt, dB, dC)
            got = torch.autograd.grad([scan_in[j] for j in want], [leaves[j] for j in want],
                                      [scan_grad[j] for j in want])
            for j, g in zip(want, got):
                grads[spatial[j]] = g
        return tuple(g if n else None for g, n in zip(grads, needs))


def ss2d_scan_torch(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    return SS2DTorchFn.apply(x, delta, A, B, C, D, delta_bias, bool(delta_softplus))
