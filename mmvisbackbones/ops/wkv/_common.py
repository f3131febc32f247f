"""Input validation and dtype rules shared by every bi-WKV backend.

Conventions (those of Vision-RWKV's ``RUN_CUDA(w, u, k, v)``):

* ``k``, ``v``: ``(B, T, C)``, any real float dtype;
* ``w``, ``u``: ``(C,)``; the caller passes ``spatial_decay / T`` and
  ``spatial_first / T``.

Math is done in float32, or float64 when any input is float64; the output
has ``v``'s dtype.
"""
from typing import NamedTuple

import torch

from .._common import compute_dtype

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Exponent of an empty running sum: finite (not -inf) so that differences of
# two empty exponents stay 0 instead of NaN; exp(NEG - finite) is exactly 0.
NEG = -1e30


class WKVMeta(NamedTuple):
    batch: int
    length: int
    channels: int
    compute_dtype: torch.dtype
    out_dtype: torch.dtype


def _check_float(name: str, t, expected: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'bi_wkv: `{name}` must be a torch.Tensor of shape '
                        f'{expected}, got {type(t).__name__}')
    if t.is_complex() or t.dtype not in FLOAT_DTYPES:
        raise TypeError(f'bi_wkv: `{name}` must have a real floating dtype '
                        f'(float16/bfloat16/float32/float64), got {t.dtype}')


def check_wkv_inputs(w, u, k, v) -> WKVMeta:
    """Validate ``bi_wkv`` inputs; ``TypeError`` for non-tensor / non-float,
    ``ValueError`` for shapes or devices. Messages name the argument."""
    _check_float('k', k, '(B, T, C)')
    if k.dim() != 3:
        raise ValueError(f'bi_wkv: `k` must be 3-D (B, T, C), got a '
                         f'{k.dim()}-D tensor of shape {tuple(k.shape)}')
    B, T, C = k.shape
    if T < 1:
        raise ValueError(f'bi_wkv: `k` has sequence length T={T}; T must be '
                         f'>= 1')
    if C < 1:
        raise ValueError(f'bi_wkv: `k` has C={C} channels; C must be >= 1')
    _check_float('v', v, f'(B, T, C)={tuple(k.shape)}')
    if v.shape != k.shape:
        raise ValueError(f'bi_wkv: `v` must have the shape of `k` (B, T, C)='
                         f'{tuple(k.shape)}, got {tuple(v.shape)}')
    for name, t in (('w', w), ('u', u)):
        _check_float(name, t, f'(C,)=({C},)')
        if tuple(t.shape) != (C, ):
            raise ValueError(f'bi_wkv: `{name}` must have shape (C,)=({C},) '
                             f'(C from `k`), got {tuple(t.shape)}')
    for name, t in (('v', v), ('w', w), ('u', u)):
        if t.device != k.device:
            raise ValueError(f'bi_wkv: `{name}` is on {t.device} but `k` is on '
                             f'{k.device}; all inputs must be on one device')
    return WKVMeta(B, T, C, compute_dtype(w, u, k, v), v.dtype)
