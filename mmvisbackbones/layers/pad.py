import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int, channels_last: bool = False) -> torch.Tensor:
    """Zero-pad the bottom and right of an (N, C, H, W) map, or an (N, H, W, C)
    one with ``channels_last``, so that H and W become multiples of
    ``multiple``; ``x`` itself when they already are.

    While tracing (ONNX export) the pad is always recorded, with amounts
    computed from the traced size: skipping it would freeze the graph to
    sizes that need no padding."""
    H, W = x.shape[1:3] if channels_last else x.shape[-2:]
    pad_b, pad_r = (-H) % multiple, (-W) % multiple
    if not torch.jit.is_tracing() and not (pad_b or pad_r):
        return x
    return F.pad(x, (0, 0, 0, pad_r, 0, pad_b) if channels_last else (0, pad_r, 0, pad_b))
