"""VMamba's SS2D scan: four-direction selective scan of an H x W map, merged.

``ss2d_scan(x, delta, A, B, C, D, delta_bias, delta_softplus)`` equals
cross-scan -> selective scan (4 groups) -> cross-merge, with inputs in
*spatial* layout, which is what VMamba's per-pixel projections produce:

* ``x``: (Bt, P, H, W), the map scanned in all four directions (u);
* ``delta``: (Bt, 4*P, H, W), direction k's step sizes in channels k*P..;
* ``A``: (4*P, N) fp32; ``B``, ``C``: (Bt, 4, N, H, W); ``D``,
  ``delta_bias``: (4*P,) fp32.

Returns the merged (Bt, P, H, W) map in fp32.  Backends (argument, else the
``MMVB_SCAN_BACKEND`` variable, else by device):

* ``'triton'`` (CUDA default): one fused kernel that walks each direction's
  scan order with direction-aware indexing -- the (Bt, 4, P, L) copies of
  ``x`` and of the outputs are never written to memory.
* ``'torch'`` (CPU default): in eager mode the chunked scan run straight on
  the map's rows and columns, no direction copies (``torch_ss2d.py``), or
  with ``MMVB_SS2D_COMPILE=1`` the same scan as one ``torch.compile``'d
  graph (``compiled_ss2d.py``); when traced (ONNX) cross-scan -> chunked
  scan -> cross-merge, whose graph does not depend on ``H`` and ``W``.
* ``'naive'``: the same composition from the reference ops.
"""
import torch

from .. import _compiled
from .._common import tracing
from .._flops import recurrence_op, selective_scan_macs
from ..cross_scan import cross_merge, cross_scan
from ..selective_scan import resolve_backend, selective_scan
from .naive import ss2d_scan_naive, to_scan_order_naive
from .torch_ss2d import K, ss2d_scan_torch, to_scan_order


def _check(x, delta, A, B, C):
    if x.dim() != 4:
        raise ValueError(f'ss2d_scan: `x` must be (Bt, P, H, W), got shape {tuple(x.shape)}')
    Bt, P, H, W = x.shape
    if tuple(delta.shape) != (Bt, K * P, H, W):
        raise ValueError(f'ss2d_scan: `delta` must be (Bt, 4*P, H, W)={(Bt, K * P, H, W)}, '
                         f'got {tuple(delta.shape)}')
    if B.dim() != 5 or tuple(B.shape[:2]) != (Bt, K) or tuple(B.shape[3:]) != (H, W):
        raise ValueError(f'ss2d_scan: `B` must be (Bt, 4, N, H, W), got {tuple(B.shape)}')
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f'ss2d_scan: `C` must have the shape of `B` {tuple(B.shape)}, '
                         f'got {tuple(C.shape)}')
    if tuple(A.shape) != (K * P, B.shape[2]):
        raise ValueError(f'ss2d_scan: `A` must be (4*P, N)={(K * P, B.shape[2])}, '
                         f'got {tuple(A.shape)}')


def _ss2d_torch(x, delta, A, B, C, D, delta_bias, delta_softplus):
    if not tracing():  # eager: the spatial-layout path
        return ss2d_scan_torch(x, delta, A, B, C, D, delta_bias, delta_softplus)
    return _ss2d_composed(x, delta, A, B, C, D, delta_bias, delta_softplus)


def _ss2d_composed(x, delta, A, B, C, D, delta_bias, delta_softplus):
    """Cross-scan -> chunked scan -> cross-merge: what a traced graph records
    (its step loops have a fixed length, so one graph serves every H, W)."""
    Bt, P, H, W = x.shape
    L = H * W
    xs = cross_scan(x).reshape(Bt, K * P, L)
    ds = to_scan_order(delta.reshape(Bt, K, P, H, W)).reshape(Bt, K * P, L)
    ys = selective_scan(xs, ds, A, to_scan_order(B), to_scan_order(C), D=D,
                        delta_bias=delta_bias, delta_softplus=delta_softplus, out_fp32=True,
                        backend='torch')
    return cross_merge(ys.view(Bt, K, P, H, W))


def _ss2d_triton(x, delta, A, B, C, D, delta_bias, delta_softplus):
    from ..selective_scan.triton_scan import ss2d_scan_triton
    return ss2d_scan_triton(x, delta, A, B, C, D, delta_bias, delta_softplus)


_BACKENDS = {'naive': ss2d_scan_naive, 'torch': _ss2d_torch, 'triton': _ss2d_triton}


def ss2d_scan(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend=None):
    if _compiled.compiling():  # one opaque node for torch.compile (ops/_compiled.py)
        return _compiled.call('ss2d_scan', (x, delta, A, B, C, D, delta_bias),
                              delta_softplus=delta_softplus, backend=backend)
    return _ss2d_scan(x, delta, A, B, C, D, delta_bias, delta_softplus, backend)


def _ss2d_scan(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend=None):
    """:func:`ss2d_scan` in eager mode (also what ``mmvb::recurrence`` runs)."""
    _check(x, delta, A, B, C)
    name = resolve_backend(backend, x.device)
    Bt, P, H, W = x.shape
    with recurrence_op('selective_scan', lambda: selective_scan_macs(
            Bt, K * P, H * W, A.shape[-1], D is not None, False)):
        if x.is_meta:  # shape-only (FLOP counting, no autograd); the merged scan is fp32
            return x.new_empty(x.shape, dtype=torch.float32)
        return _BACKENDS[name](x, delta, A, B, C, D, delta_bias, delta_softplus)


_compiled.register('ss2d_scan', _ss2d_scan)

__all__ = ['ss2d_scan', 'ss2d_scan_naive', 'to_scan_order', 'to_scan_order_naive']
