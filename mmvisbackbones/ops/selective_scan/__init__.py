"""Mamba S6 selective scan with ``mamba_ssm``'s argument conventions.

Backends (``backend=`` argument, else the ``MMVB_SCAN_BACKEND`` environment
variable, else the per-device default):

* ``'naive'``  - sequential reference loop (:mod:`.naive`).
* ``'torch'``  - chunked pure-PyTorch scan (:mod:`.chunked`), the CPU default.
* ``'triton'`` - Triton kernels (:mod:`.triton_scan`), the CUDA default when
  triton is installed; on the CPU only under ``TRITON_INTERPRET=1``.

Adding a backend is one entry in :data:`_BACKENDS`.
"""
import importlib.util
import os
from typing import Callable, NamedTuple, Optional, Tuple

import torch

from .. import _compiled
from .._flops import recurrence_op, selective_scan_macs
from ._common import check_scan_inputs

from .chunked import (DEFAULT_CHUNK_SIZE, default_chunk_size,
                      selective_scan_chunked)
from .naive import selective_scan_naive

BACKEND_ENV_VAR = 'MMVB_SCAN_BACKEND'


class _Backend(NamedTuple):
    fn: Callable
    available: bool
    description: str


def _run_naive(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
               return_last_state, out_fp32, chunk_size):
    # chunk_size has no meaning for the sequential reference
    return selective_scan_naive(u, delta, A, B, C, D, z, delta_bias,
                                delta_softplus, return_last_state, out_fp32)


def _run_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
               return_last_state, out_fp32, chunk_size):
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias,
                                  delta_softplus, return_last_state, out_fp32,
                                  chunk_size)


def _run_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                return_last_state, out_fp32, chunk_size):
    # imported on first use: the kernels are JIT-compiled, and triton decides
    # at import time whether to interpret them (TRITON_INTERPRET=1)
    from .triton_scan import selective_scan_triton
    return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias,
                                 delta_softplus, return_last_state, out_fp32)


HAS_TRITON = importlib.util.find_spec('triton') is not None

_BACKENDS = {
    'naive': _Backend(_run_naive, True, 'sequential reference loop'),
    'torch': _Backend(_run_torch, True, 'chunked pure-PyTorch scan'),
    'triton': _Backend(_run_triton, HAS_TRITON, 'Triton kernels (CUDA)'),
}

# default backend per device type; anything else falls back to 'torch'
_DEFAULT_BACKEND = {'cpu': 'torch', 'cuda': 'triton' if HAS_TRITON else 'torch'}


def available_backends() -> Tuple[str, ...]:
    """Names of the backends that can run in this installation."""
    return tuple(name for name, b in _BACKENDS.items() if b.available)


def resolve_backend(backend: Optional[str] = None,
                    device: Optional[torch.device] = None) -> str:
    """Backend name chosen for ``backend`` (argument > env var > default)."""
    source = 'argument `backend`'
    if backend is None:
        env = os.environ.get(BACKEND_ENV_VAR, '').strip()
        if env:
            backend, source = env, f'environment variable {BACKEND_ENV_VAR}'
    if backend is None:
        dev_type = torch.device(device).type if device is not None else 'cpu'
        return _DEFAULT_BACKEND.get(dev_type, 'torch')
    if not isinstance(backend, str):
        raise TypeError(f'selective_scan: {source} must be a str or None, got '
                        f'{type(backend).__name__}')
    name = backend.strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f'selective_scan: unknown backend {backend!r} (from '
                         f'{source}); valid backends are '
                         f'{sorted(_BACKENDS)}')
    return name


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False, return_last_state=False,
                   out_fp32=False, backend=None, chunk_size=None):
    """Mamba S6 selective scan.

    ``delta' = softplus(delta + delta_bias)`` (bias / softplus optional),
    ``h_t = exp(delta'_t A) * h_{t-1} + delta'_t B_t u_t`` with ``h_0 = 0``,
    ``y_t = C_t . h_t + D u_t`` and ``out = y * silu(z)`` if ``z`` is given.

    Args:
        u, delta: ``(Bt, Dm, L)``, any float dtype.
        A: ``(Dm, N)`` real (float32 normally).
        B, C: ``(Bt, G, N, L)`` (channel ``d`` uses group ``d // (Dm // G)``)
            or ``(Bt, N, L)`` (``G = 1``).
        D, delta_bias: optional ``(Dm,)``.
        z: optional ``(Bt, Dm, L)`` gate.
        delta_softplus: apply softplus to the (biased) delta.
        return_last_state: also return the final ``(Bt, Dm, N)`` state.
        out_fp32: float32 output instead of ``u.dtype``.
        backend: ``'naive'``, ``'torch'`` or ``'triton'``; ``None`` reads
            ``MMVB_SCAN_BACKEND``, else ``'triton'`` for CUDA tensors (when
            triton is installed) and ``'torch'`` otherwise.
        chunk_size: chunk length of the ``'torch'`` backend; ``None`` picks
            :func:`.chunked.default_chunk_size` (64). Ignored by the others.

    Internal math is float32 (float64 if an input is float64). The last state
    is in that compute dtype.

    Returns:
        ``out`` ``(Bt, Dm, L)`` or ``(out, last_state)``.
    """
    if _compiled.compiling():  # one opaque node for torch.compile (ops/_compiled.py)
        return _compiled.call('selective_scan', (u, delta, A, B, C, D, z, delta_bias),
                              delta_softplus=delta_softplus,
                              return_last_state=return_last_state, out_fp32=out_fp32,
                              backend=backend, chunk_size=chunk_size)
    return _selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                           return_last_state, out_fp32, backend, chunk_size)


def _selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                    delta_softplus=False, return_last_state=False, out_fp32=False, backend=None,
                    chunk_size=None):
    """:func:`selective_scan` in eager mode (also what ``mmvb::recurrence`` runs)."""
    device = u.device if isinstance(u, torch.Tensor) else None
    name = resolve_backend(backend, device)
    with recurrence_op('selective_scan', lambda: selective_scan_macs(
            *u.shape, A.shape[-1], D is not None, z is not None)):
        if device is not None and device.type == 'meta':
            return _meta_result(u, delta, A, B, C, D, z, delta_bias, return_last_state,
                                out_fp32)
        return _BACKENDS[name].fn(u, delta, A, B, C, D, z, delta_bias,
                                  delta_softplus, return_last_state, out_fp32,
                                  chunk_size)


def _meta_result(u, delta, A, B, C, D, z, delta_bias, return_last_state, out_fp32):
    """Shape-only result for ``meta`` tensors (FLOP counting, no autograd),
    after the same input checks as the backends."""
    meta = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, out_fp32)
    out = u.new_empty(u.shape, dtype=meta.out_dtype)
    if return_last_state:
        return out, u.new_empty((meta.batch, meta.dim, meta.d_state), dtype=meta.compute_dtype)
    return out


_compiled.register('selective_scan', _selective_scan)

__all__ = [
    'selective_scan', 'selective_scan_naive', 'selective_scan_chunked',
    'available_backends', 'resolve_backend', 'BACKEND_ENV_VAR',
    'DEFAULT_CHUNK_SIZE', 'default_chunk_size'
]
