"""Input validation and dtype rules shared by every selective-scan backend.

Conventions (same as ``mamba_ssm.selective_scan_fn``):

* ``u``, ``delta``, ``z``: ``(Bt, Dm, L)``
* ``A``: ``(Dm, N)``, real
* ``B``, ``C``: ``(Bt, G, N, L)`` (channel ``d`` uses group ``d // (Dm // G)``)
  or ``(Bt, N, L)`` meaning ``G == 1``
* ``D``, ``delta_bias``: ``(Dm,)``

Internal math is done in float32, or float64 when any input is float64.
"""
from typing import NamedTuple, Optional

import torch

from .._common import compute_dtype

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ScanMeta(NamedTuple):
    batch: int
    dim: int
    length: int
    d_state: int
    groups: int
    compute_dtype: torch.dtype
    out_dtype: torch.dtype
    B: torch.Tensor  # always (Bt, G, N, L)
    C: torch.Tensor  # always (Bt, G, N, L)


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _check_float_tensor(name: str, t, expected: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'selective_scan: `{name}` must be a torch.Tensor '
                        f'of shape {expected}, got {type(t).__name__}')
    if t.is_complex():
        raise TypeError(
            f'selective_scan: `{name}` has complex dtype {t.dtype}; complex '
            f'tensors are not supported (only real float16/bfloat16/'
            f'float32/float64)')
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f'selective_scan: `{name}` must have a floating dtype '
            f'(float16/bfloat16/float32/float64), got {t.dtype}')


def check_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                      out_fp32: bool = False) -> ScanMeta:
    """Validate the inputs of a selective scan and return its sizes.

    Raises ``TypeError`` for non-tensor / complex / integer inputs and
    ``ValueError`` for shape or device mismatches; every message names the
    offending argument, the expected shape and the shape it got.
    """
    _check_float_tensor('u', u, '(Bt, Dm, L)')
    if u.dim() != 3:
        raise ValueError(f'selective_scan: `u` must be 3-D (Bt, Dm, L), got '
                         f'{u.dim()}-D tensor of shape {_shape(u)}')
    Bt, Dm, L = u.shape
    if L < 1:
        raise ValueError(f'selective_scan: `u` has sequence length L={L}; '
                         f'L must be >= 1')

    _check_float_tensor('delta', delta, f'(Bt, Dm, L)={_shape(u)}')
    if _shape(delta) != _shape(u):
        raise ValueError(f'selective_scan: `delta` must have the shape of `u` '
                         f'(Bt, Dm, L)={_shape(u)}, got {_shape(delta)}')

    _check_float_tensor('A', A, f'(Dm, N) with Dm={Dm}')
    if A.dim() != 2:
        raise ValueError(f'selective_scan: `A` must be 2-D (Dm, N) with '
                         f'Dm={Dm}, got {A.dim()}-D tensor of shape '
                         f'{_shape(A)}')
    if A.shape[0] != Dm:
        raise ValueError(f'selective_scan: `A` must have shape (Dm, N) with '
                         f'Dm={Dm} (from `u`), got {_shape(A)}')
    N = A.shape[1]

    groups = []
    normalized = []
    for name, t in (('B', B), ('C', C)):
        _check_float_tensor(name, t, '(Bt, G, N, L) or (Bt, N, L)')
        if t.dim() == 3:
            t4 = t.unsqueeze(1)
        elif t.dim() == 4:
            t4 = t
        else:
            raise ValueError(
                f'selective_scan: `{name}` must be 4-D (Bt, G, N, L) or 3-D '
                f'(Bt, N, L), got {t.dim()}-D tensor of shape {_shape(t)}')
        G = t4.shape[1]
        if t4.shape[0] != Bt or t4.shape[2] != N or t4.shape[3] != L:
            raise ValueError(
                f'selective_scan: `{name}` must have shape (Bt, G, N, L) with '
                f'Bt={Bt}, N={N}, L={L} (or (Bt, N, L)), got {_shape(t)}')
        if G < 1 or Dm % G != 0:
            raise ValueError(
                f'selective_scan: `{name}` has G={G} groups but Dm={Dm} is not '
                f'divisible by G')
        groups.append(G)
        normalized.append(t4)
    if groups[0] != groups[1]:
        raise ValueError(f'selective_scan: `B` and `C` must have the same '
                         f'number of groups, got G={groups[0]} for `B` and '
                         f'G={groups[1]} for `C`')

    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is None:
            continue
        _check_float_tensor(name, t, f'(Dm,)=({Dm},)')
        if _shape(t) != (Dm,):
            raise ValueError(f'selective_scan: `{name}` must have shape '
                             f'(Dm,)=({Dm},), got {_shape(t)}')
    if z is not None:
        _check_float_tensor('z', z, f'(Bt, Dm, L)={_shape(u)}')
        if _shape(z) != _shape(u):
            raise ValueError(f'selective_scan: `z` must have the shape of `u` '
                             f'(Bt, Dm, L)={_shape(u)}, got {_shape(z)}')

    named = [('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C),
             ('D', D), ('z', z), ('delta_bias', delta_bias)]
    given = [(n, t) for n, t in named if t is not None]
    for name, t in given:
        if t.device != u.device:
            raise ValueError(f'selective_scan: `{name}` is on {t.device} but '
                             f'`u` is on {u.device}; all inputs must be on the '
                             f'same device')

    out_dtype = torch.float32 if out_fp32 else u.dtype
    return ScanMeta(Bt, Dm, L, N, groups[0], compute_dtype(*(t for _, t in given)), out_dtype,
                    normalized[0], normalized[1])


def check_chunk_size(chunk_size: Optional[int], default: int) -> int:
    if chunk_size is None:
        return default
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f'selective_scan: `chunk_size` must be a positive int '
                        f'or None, got {chunk_size!r}')
    if chunk_size < 1:
        raise ValueError(f'selective_scan: `chunk_size` must be >= 1, got '
                         f'{chunk_size}')
    return chunk_size
