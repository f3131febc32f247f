"""What every op of this package shares."""
import torch


def compute_dtype(*tensors) -> torch.dtype:
    """The dtype every op computes in (states, accumulators, softmax
    statistics): float64 when any given tensor is float64, else float32, also
    for float16 / bfloat16 inputs.  ``None`` entries (optional inputs) are
    skipped."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def tracing() -> bool:
    """True under ``torch.jit.trace`` / ``torch.onnx.export``: the ops'
    torch paths then record functional ops with no length-dependent Python
    control flow (what an exported graph needs)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
