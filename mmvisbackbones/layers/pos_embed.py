from typing import Tuple

import torch
import torch.nn.functional as F


def resize_pos_embed(pos_embed: torch.Tensor, src_hw: Tuple[int, int],
                     dst_hw: Tuple[int, int], mode: str = 'bicubic') -> torch.Tensor:
    """Resize a (1, Hs*Ws, C) grid of position embeddings to (1, Hd*Wd, C)
    (bicubic, align_corners=False, computed in fp32).

    While tracing (ONNX export) the resize is always recorded, to the traced
    ``dst_hw`` (at equal sizes it is the identity): returning ``pos_embed``
    would freeze the graph to the pre-training grid."""
    src_hw, dst_hw = tuple(src_hw), tuple(dst_hw)
    if pos_embed.shape[1] != src_hw[0] * src_hw[1]:
        raise ValueError(f'pos_embed has {pos_embed.shape[1]} tokens, not {src_hw[0]}x{src_hw[1]}')
    if not torch.jit.is_tracing() and src_hw == dst_hw:
        return pos_embed
    C = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, src_hw[0], src_hw[1], C).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, dst_hw[0] * dst_hw[1], C).to(pos_embed.dtype)
