from .base import BaseBackbone
from .plain import PlainBackbone
from .vim import Vim, convert_vim_checkpoint
from .vmamba import VMamba, convert_vmamba_checkpoint

__all__ = [
    'BaseBackbone', 'PlainBackbone', 'VMamba', 'convert_vmamba_checkpoint', 'Vim',
    'convert_vim_checkpoint'
]
