from .base import BaseBackbone
from .plain import PlainBackbone
from .vim import Vim, convert_vim_checkpoint
from .vision_rwkv import VisionRWKV, convert_vision_rwkv_checkpoint
from .vmamba import VMamba, convert_vmamba_checkpoint

__all__ = [
    'BaseBackbone', 'PlainBackbone', 'VMamba', 'convert_vmamba_checkpoint', 'Vim',
    'convert_vim_checkpoint', 'VisionRWKV',
    'convert_vision_rwkv_checkpoint'
]
