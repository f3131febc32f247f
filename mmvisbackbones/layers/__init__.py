from .drop import DropPath, drop_path
from .linear import Linear2d
from .mlp import Mlp, Mlp2d
from .norm import LayerNorm2d, RMSNorm, build_norm2d
from .pad import pad_to_multiple
from .pos_embed import resize_pos_embed
from .sfp import sfp_branch
from .stage import Stage, drop_path_schedule, init_linear_and_norm, run_blocks

__all__ = [
    'DropPath', 'drop_path', 'Linear2d', 'Mlp', 'Mlp2d', 'LayerNorm2d', 'RMSNorm', 'build_norm2d',
    'pad_to_multiple', 'resize_pos_embed', 'sfp_branch', 'Stage', 'drop_path_schedule',
    'init_linear_and_norm', 'run_blocks'
]
