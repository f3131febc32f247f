"""SS2D's CPU forward as one ``torch.compile``'d graph (opt-in).

The eager CPU path (:mod:`.torch_ss2d`) spends most of its time in
elementwise passes over full-size tensors: the layout copies, the bias,
``softplus``, ``dt * A``, ``exp``, ``dt * u * B``, the chunk decay products
and the merge, each one eager op.  Here the same chunked scan is written for
inductor, which fuses them into the loads and stores of the recurrence:

* layout: every direction group works on ``(Bt, T, ..., P)`` tensors, the
  channel axis innermost, so a channels-last map (what VMamba's depthwise
  conv returns) is read with contiguous, vectorised loads.  Rows
  (directions 0 / 2) are ``(Bt, T, H, n, P)``: row ``h`` cut into ``n``
  chunks of ``T`` pixels, chunk after chunk in the sequence; columns
  (directions 1 / 3) are ``(Bt, T, n, W, P)``;
* pass 1, unrolled over the ``T`` steps: every chunk's end state from a
  zero state, and its decay product.  The decays ``exp(d A)`` are written
  out in each pass, so inductor computes them inside both step loops
  instead of storing a full-size tensor of them (``max_fusion_size`` is
  raised so that each pass stays one loop);
* the carry over chunks, in sequence order (rows ``(h, j)``, columns
  ``(w, j)``), by log-step rounds;
* pass 3, unrolled: the states from the true carries, read out ``C . h``;
  the four readouts, turned back to the map, plus ``sum_k D_k u``.

A row or column whose length has no divisor between :data:`MIN_CHUNK` and
:data:`TARGET_CHUNK` is padded to ``n * T`` with identity steps (decay 1,
input 0), which leave the state unchanged, so the padding changes nothing
that is read out.  As in the eager path, everything is computed in fp32
(fp64 for fp64 inputs), only decays ``exp(dt A) <= 1`` and their products
are multiplied, and nothing is divided.

``torch.compile`` specialises on shapes: the first call for each map size
compiles (116-155 s for VMamba-T's four stages at 512x512 on 2 CPU cores;
inductor caches the result on disk, and a later process loaded them in
12-14 s).  Each compiled size takes one graph per stage, up to
:data:`MAX_GRAPHS` in all (the call raises dynamo's recompile limit to it);
past that the call raises, naming the limit.  This path is the forward only:
:class:`.torch_ss2d.SS2DTorchFn` keeps its backward.  It is chosen with
``MMVB_SS2D_COMPILE=1``; an environment where ``torch.compile`` cannot build
(no C++ compiler) raises, naming the variable, instead of falling back.
"""
import os
from typing import Tuple

import torch
import torch.nn.functional as F

from .._common import compute_dtype
from ..selective_scan.chunked import _carry_scan

#: environment variable that selects this path for the eager CPU forward
ENV_VAR = 'MMVB_SS2D_COMPILE'
_ON, _OFF = ('1', 'true', 'yes', 'on'), ('', '0', 'false', 'no', 'off')

#: chunks hold at most this many steps (the unrolled step loops)
TARGET_CHUNK = 32
#: a divisor of the length below this is not used: the length is padded
MIN_CHUNK = 16
#: how many specialisations the compiled graph may hold: one per stage for
#: every input size and dtype.  Dynamo's own default (8) is two VMamba sizes.
MAX_GRAPHS = 64


def enabled() -> bool:
    """Whether ``MMVB_SS2D_COMPILE`` asks for this path (read at every call)."""
    value = os.environ.get(ENV_VAR, '').strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f'{ENV_VAR}={os.environ[ENV_VAR]!r}: expected one of {_ON} (the compiled '
                     f'CPU forward) or {_OFF[1:]} / unset (the eager one)')


def chunk_plan(L: int) -> Tuple[int, int, int]:
    """``(T, n, pad)`` for a row / column of ``L`` pixels: ``n`` chunks of
    ``T`` steps, ``n * T = L + pad``.  No padding where ``L`` fits one chunk
    or has a divisor in ``[MIN_CHUNK, TARGET_CHUNK]``; otherwise the fewest
    chunks of at most ``TARGET_CHUNK`` steps (``pad < n``)."""
    if L <= TARGET_CHUNK:
        return L, 1, 0
    # a plain loop: dynamo traces this inside the graph, and it cannot trace
    # ``max()`` over a generator with ``default=``
    for d in range(TARGET_CHUNK, MIN_CHUNK - 1, -1):
        if L % d == 0:
            return d, L // d, 0
    n = -(-L // TARGET_CHUNK)
    T = -(-L // n)
    return T, n, n * T - L


# ---------------------------------------------------------------- the graph
def _layout(t, rows, T, n, pad, fill=0.0):
    """``(Bt, c, H, W)`` (any strides) -> rows ``(Bt, T, H, n, c)`` / columns
    ``(Bt, T, n, W, c)``, the scanned axis padded by ``pad`` with ``fill``."""
    if pad:
        t = F.pad(t, (0, pad) if rows else (0, 0, 0, pad), value=fill)
    t = t.permute(0, 2, 3, 1)                                        # (Bt, H, W, c)
    if rows:
        return t.unflatten(2, (n, T)).permute(0, 3, 1, 2, 4)         # (Bt, T, H, n, c)
    return t.unflatten(1, (n, T)).permute(0, 2, 1, 3, 4)             # (Bt, T, n, W, c)


def _group(dts, u, Bs, Cs, As, biases, softplus, rows, plan, H, W):
    """Directions ``(forward, backward)`` of one layout: the sum of their
    readouts as a ``(Bt, H, W, P)`` map."""
    T, n, pad = plan
    lay = lambda t: _layout(t, rows, T, n, pad)  # noqa: E731
    uL = lay(u).unsqueeze(-1)                                        # (Bt, T, ., ., P, 1)
    valid = None
    if pad:  # identity steps where the layout holds padding
        idx = torch.arange(T, device=u.device).view(T, 1) + T * torch.arange(n, device=u.device)
        valid = (idx < (W if rows else H)).view((1, T, 1, n, 1, 1) if rows else (1, T, n, 1, 1, 1))
    ys = [0.0] * T  # step t of every chunk: the two readouts summed
    for dt, B, C, A, bias, reverse in zip(dts, Bs, Cs, As, biases, (False, True)):
        d = lay(dt)
        if bias is not None:
            d = d + bias
        if softplus:
            d = F.softplus(d)
        d = d.unsqueeze(-1)                                          # (Bt, T, ., ., P, 1)
        b = d * uL * lay(B).unsqueeze(-2)                            # B: (., N) -> (., 1, N)
        c = lay(C).unsqueeze(-2)
        if valid is not None:
            b = torch.where(valid, b, torch.zeros_like(b))

        def decay_at(t):
            # exp(d A) at step t, written out in each pass: inductor then
            # computes it inside both step loops instead of storing a full-size
            # tensor of decays and streaming it back twice
            a = torch.exp(d[:, t] * A)
            return a if valid is None else torch.where(valid[:, t], a, torch.ones_like(a))

        steps = list(range(T - 1, -1, -1) if reverse else range(T))
        h = decay = None
        for t in steps:  # pass 1: chunk end states from zero, and decay products
            a = decay_at(t)
            h = b[:, t] if h is None else a * h + b[:, t]
            decay = a if decay is None else decay * a
        # the state entering every chunk, in sequence order, by the chunked
        # scan's log-step carry along the chunk axis (channels stay innermost)
        if rows:   # chunks (h, j): already in order
            h = _carry_scan(decay.flatten(1, 2), h.flatten(1, 2), reverse, dim=1).view(h.shape)
        else:      # chunks laid out (j, w), ordered (w, j)
            seq = lambda t: t.transpose(1, 2).flatten(1, 2)  # noqa: E731
            h = _carry_scan(seq(decay), seq(h), reverse, dim=1)
            h = h.view(h.shape[0], W, n, *h.shape[2:]).transpose(1, 2)
        for t in steps:  # pass 3: the states from the true carries, read out
            h = decay_at(t) * h + b[:, t]
            ys[t] = ys[t] + (h * c[:, t]).sum(-1)
    total = torch.stack(ys, 1)
    # back to the map: rows (Bt, T, H, n, P) -> (Bt, H, n T, P); columns
    # (Bt, T, n, W, P) -> (Bt, n T, W, P); padding dropped
    if rows:
        return total.permute(0, 2, 3, 1, 4).flatten(2, 3)[:, :, :W]
    return total.permute(0, 2, 1, 3, 4).flatten(1, 2)[:, :H]


def _ss2d_graph(x, delta, A, B, C, D, delta_bias, softplus: bool, cd: torch.dtype):
    Bt, P, H, W = x.shape
    N = A.shape[-1]
    u = x.to(cd)
    dt = delta.reshape(Bt, 4, P, H, W).to(cd)
    A = A.to(cd).reshape(4, P, N)
    bias = [None] * 4 if delta_bias is None else list(delta_bias.to(cd).reshape(4, P))
    B, C = B.to(cd), C.to(cd)
    out = None
    for k0, k1, rows in ((0, 2, True), (1, 3, False)):
        plan = chunk_plan(W if rows else H)
        y = _group((dt[:, k0], dt[:, k1]), u, (B[:, k0], B[:, k1]), (C[:, k0], C[:, k1]),
                   (A[k0], A[k1]), (bias[k0], bias[k1]), softplus, rows, plan, H, W)
        out = y if out is None else out + y
    if D is not None:
        out = out + u.permute(0, 2, 3, 1) * D.to(cd).reshape(4, P).sum(0)
    return out.permute(0, 3, 1, 2)                                   # (Bt, P, H, W)


_compiled = None


def ss2d_forward_compiled(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """:func:`.torch_ss2d.ss2d_forward` computed by the compiled graph: the
    merged ``(Bt, P, H, W)`` map in the compute dtype (channels-last
    strides)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_ss2d_graph, fullgraph=True, dynamic=False,
                                  options={'max_fusion_size': 512})
    cd = compute_dtype(x, delta, A, B, C, D, delta_bias)
    try:
        with torch._dynamo.config.patch(recompile_limit=MAX_GRAPHS):
            return _compiled(x, delta, A, B, C, D, delta_bias, bool(delta_softplus), cd)
    except Exception as err:  # a broken toolchain must not pass unnoticed
        from torch._dynamo.exc import FailOnRecompileLimitHit
        if isinstance(err, FailOnRecompileLimitHit):
            raise RuntimeError(
                f'ss2d_scan: the torch.compile\'d CPU forward ({ENV_VAR}=1) already holds '
                f'{MAX_GRAPHS} compiled graphs (compiled_ss2d.MAX_GRAPHS: one per stage for every '
                f'input size and dtype), and this call needs another. It is meant for a few '
                f'fixed input sizes: resize or pad the inputs to one size, raise MAX_GRAPHS, or '
                f'unset {ENV_VAR} to use the eager path.') from err
        raise RuntimeError(
            f'ss2d_scan: the torch.compile\'d CPU forward ({ENV_VAR}=1) failed: '
            f'{type(err).__name__}: {err}. Unset {ENV_VAR} to use the eager path.') from err
