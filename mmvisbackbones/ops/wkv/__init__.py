"""Bidirectional WKV of Vision-RWKV (``RUN_CUDA(w, u, k, v)`` upstream).

For every batch and channel::

    y_t = [ sum_{i != t} exp(k_i - (|t-i| - 1) w) v_i + exp(u + k_t) v_t ]
        / [ sum_{i != t} exp(k_i - (|t-i| - 1) w)     + exp(u + k_t)     ]

with ``w = spatial_decay / T`` and ``u = spatial_first / T`` (the caller
divides, as Vision-RWKV does before its CUDA kernel).

Backends (``backend=`` argument, else the ``MMVB_SCAN_BACKEND`` environment
variable shared with :func:`mmvisbackbones.ops.selective_scan`, else the
per-device default):

* ``'naive'``  - the full ``(T, T)`` weight matrix (:mod:`.naive`), O(T^2).
* ``'torch'``  - blocked PyTorch scans with an analytic backward
  (:mod:`.torch_wkv`), the CPU default.
* ``'triton'`` - Triton kernels (:mod:`.triton_wkv`), the CUDA default when
  triton is installed; on the CPU only under ``TRITON_INTERPRET=1``.
"""
from typing import Callable, Dict, Optional

import torch

from .. import _compiled
from .._flops import recurrence_op, wkv_macs
from ..selective_scan import HAS_TRITON, resolve_backend as _resolve_scan_backend
from ._common import check_wkv_inputs
from .naive import bi_wkv_naive
from .torch_wkv import bi_wkv_torch


def _run_triton(w, u, k, v):
    # imported on first use: triton decides when a kernel is defined whether
    # to interpret it (TRITON_INTERPRET=1)
    from .triton_wkv import bi_wkv_triton
    return bi_wkv_triton(w, u, k, v)


_BACKENDS: Dict[str, Callable] = {
    'naive': bi_wkv_naive,
    'torch': bi_wkv_torch,
    'triton': _run_triton,
}


def available_backends():
    """Names of the backends that can run in this installation."""
    return tuple(n for n in _BACKENDS if n != 'triton' or HAS_TRITON)


def resolve_backend(backend: Optional[str] = None,
                    device: Optional[torch.device] = None) -> str:
    """Backend for ``backend`` (argument > ``MMVB_SCAN_BACKEND`` > device
    default), with the rules of the selective-scan dispatcher."""
    try:
        name = _resolve_scan_backend(backend, device)
    except (TypeError, ValueError) as err:
        raise type(err)(str(err).replace('selective_scan:', 'bi_wkv:', 1)) from None
    if name not in _BACKENDS:
        raise ValueError(f'bi_wkv: backend {name!r} is not implemented for bi_wkv; valid '
                         f'backends are {sorted(_BACKENDS)}')
    return name


def bi_wkv(w, u, k, v, backend: Optional[str] = None):
    """Bidirectional WKV attention of Vision-RWKV.

    Args:
        w: ``(C,)`` spatial decay, already divided by ``T``; may be negative
            (far tokens then weigh more).
        u: ``(C,)`` spatial bonus of the token itself, already divided by T.
        k, v: ``(B, T, C)``, any float dtype.
        backend: ``'naive'``, ``'torch'`` or ``'triton'``; ``None`` reads
            ``MMVB_SCAN_BACKEND``, else ``'triton'`` for CUDA tensors (when
            triton is installed) and ``'torch'`` otherwise.

    Math is float32 (float64 if any input is float64), stabilised with
    running maximum exponents. Gradients flow to all four inputs.

    Returns:
        ``(B, T, C)`` in ``v.dtype``.
    """
    if _compiled.compiling():  # one opaque node for torch.compile (ops/_compiled.py)
        return _compiled.call('bi_wkv', (w, u, k, v), backend=backend)
    return _bi_wkv(w, u, k, v, backend)


def _bi_wkv(w, u, k, v, backend=None):
    """:func:`bi_wkv` in eager mode (also what ``mmvb::recurrence`` runs)."""
    device = k.device if isinstance(k, torch.Tensor) else None
    name = resolve_backend(backend, device)
    meta = check_wkv_inputs(w, u, k, v)
    if meta.batch == 0:  # nothing to launch: the reference copes with it
        name = 'naive'
    with recurrence_op('bi_wkv', lambda: wkv_macs(*k.shape)):
        if k.is_meta:  # shape-only (FLOP counting, no autograd)
            return v.new_empty(v.shape)
        return _BACKENDS[name](w, u, k, v)


_compiled.register('bi_wkv', _bi_wkv)

__all__ = ['bi_wkv', 'bi_wkv_naive', 'bi_wkv_torch', 'available_backends',
           'resolve_backend']
