from .drop import DropPath, drop_path
from .linear import Linear2d
from .mlp import Mlp2d
from .norm import LayerNorm2d, build_norm2d

__all__ = ['DropPath', 'drop_path', 'Linear2d', 'Mlp2d', 'LayerNorm2d', 'build_norm2d']
