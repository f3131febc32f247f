"""Bidirectional selective scan (Vim's bimamba v2).

Two directions, each with its own parameters, over one sequence:
direction 0 scans t = 0..L-1, direction 1 scans t = L-1..0.  Inputs are all
in natural order (no flips are needed from the caller):

* ``u``, ``delta``: (Bt, 2P, L) -- channels 0..P-1 direction 0, P..2P-1
  direction 1;
* ``A``: (2P, N) fp32; ``B``, ``C``: (Bt, 2, N, L); ``D``, ``delta_bias``: (2P,);
* ``z``: optional (Bt, P, L) gate shared by both directions.

Returns ``scan_0 * silu(z) + scan_1 * silu(z)``: (Bt, P, L) in ``u.dtype``
(fp32 with ``out_fp32``).  Backends: ``'triton'`` (CUDA default, one fused
kernel walking direction 1 backwards -- no flipped copies), ``'torch'``
(flips + two chunked scans), ``'naive'``.
"""
import torch

from .. import _compiled
from .._flops import recurrence_op, selective_scan_macs
from ..selective_scan import resolve_backend, selective_scan
from .naive import bidirectional_scan_naive, bidirectional_scan_reference


def _torch_scan(*args, **kw):
    return selective_scan(*args, **kw, backend='torch')


def _bidir_torch(*args, **kw):
    return bidirectional_scan_reference(_torch_scan, *args, **kw)


def _bidir_triton(*args, **kw):
    from ..selective_scan.triton_scan import bidirectional_scan_triton
    return bidirectional_scan_triton(*args, **kw)


_BACKENDS = {'naive': bidirectional_scan_naive, 'torch': _bidir_torch, 'triton': _bidir_triton}


def _check(u, delta, A, B, C, z):
    if u.dim() != 3 or u.shape[1] % 2:
        raise ValueError('bidirectional_scan: `u` must be (Bt, 2P, L) (both directions '
                         f'stacked on the channels), got shape {tuple(u.shape)}')
    Bt, D2, L = u.shape
    if tuple(delta.shape) != tuple(u.shape):
        raise ValueError(f'bidirectional_scan: `delta` must be {tuple(u.shape)}, '
                         f'got {tuple(delta.shape)}')
    if B.dim() != 4 or tuple(B.shape[:2]) != (Bt, 2) or B.shape[3] != L:
        raise ValueError(f'bidirectional_scan: `B` must be (Bt, 2, N, L), got {tuple(B.shape)}')
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f'bidirectional_scan: `C` must be {tuple(B.shape)}, got '
                         f'{tuple(C.shape)}')
    if tuple(A.shape) != (D2, B.shape[2]):
        raise ValueError(f'bidirectional_scan: `A` must be (2P, N)={(D2, B.shape[2])}, '
                         f'got {tuple(A.shape)}')
    if z is not None and tuple(z.shape) != (Bt, D2 // 2, L):
        raise ValueError(f'bidirectional_scan: `z` must be (Bt, P, L)={(Bt, D2 // 2, L)}, '
                         f'got {tuple(z.shape)}')


def bidirectional_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=True, out_fp32=False, backend=None):
    if _compiled.compiling():  # one opaque node for torch.compile (ops/_compiled.py)
        return _compiled.call('bidirectional_scan', (u, delta, A, B, C, D, z, delta_bias),
                              delta_softplus=delta_softplus, out_fp32=out_fp32,
                              backend=backend)
    return _bidirectional_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_fp32,
                               backend)


def _bidirectional_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=True, out_fp32=False, backend=None):
    """:func:`bidirectional_scan` in eager mode (also what ``mmvb::recurrence`` runs)."""
    _check(u, delta, A, B, C, z)
    name = resolve_backend(backend, u.device)
    Bt, D2, L = u.shape
    # both directions' scans; the z gate is applied to each direction's output
    with recurrence_op('selective_scan', lambda: selective_scan_macs(
            Bt, D2, L, A.shape[-1], D is not None, z is not None)):
        if u.is_meta:  # shape-only (FLOP counting, no autograd)
            return u.new_empty((Bt, D2 // 2, L), dtype=torch.float32 if out_fp32 else u.dtype)
        return _BACKENDS[name](u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                               delta_softplus=delta_softplus, out_fp32=out_fp32)


_compiled.register('bidirectional_scan', _bidirectional_scan)

__all__ = ['bidirectional_scan', 'bidirectional_scan_naive']
