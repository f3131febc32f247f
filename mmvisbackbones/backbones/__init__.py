from .base import BaseBackbone
from .vmamba import VMamba, convert_vmamba_checkpoint

__all__ = ['BaseBackbone', 'VMamba', 'convert_vmamba_checkpoint']
