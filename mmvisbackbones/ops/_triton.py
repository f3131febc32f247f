"""What the Triton backends of every op share: the optional import and the
input checks (CUDA tensors, or the CPU under ``TRITON_INTERPRET=1``;
fp32 / fp16 / bf16)."""
import os

import torch

try:  # triton is optional: the package imports without it
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only without triton
    triton = tl = None
    HAS_TRITON = False

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_triton_inputs(op: str, named_tensors):
    """Raise a clear error unless the ``(name, tensor)`` pairs can go to the
    Triton kernels of ``op``; the first tensor's device decides."""
    if not HAS_TRITON:
        raise RuntimeError(f"{op}: backend 'triton' needs the `triton` package "
                           "(pip install triton); use backend='torch' without it")
    device = named_tensors[0][1].device
    if device.type != 'cuda' and os.environ.get('TRITON_INTERPRET', '0') != '1':
        raise RuntimeError(
            f"{op}: backend 'triton' runs on CUDA tensors, got {device}; use "
            "backend='torch' on the CPU (or TRITON_INTERPRET=1 to debug the kernels there)")
    for name, t in named_tensors:
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{op}: backend 'triton' supports float32, float16 and "
                            f"bfloat16, got `{name}` of dtype {t.dtype}; use backend='torch' "
                            'for float64')
