from .base import BaseBackbone
from .plain import PlainBackbone
# registration order = the order of the README model table
from .vmamba import VMamba, convert_vmamba_checkpoint  # noqa: I001
from .vim import Vim, convert_vim_checkpoint
from .vision_rwkv import VisionRWKV, VisionRWKVAdapter, convert_vision_rwkv_checkpoint
from .plain_mamba import PlainMamba, convert_plain_mamba_checkpoint
from .mlla import MLLA, convert_mlla_checkpoint
from .swin import Swin, convert_swin_checkpoint
from .pvtv2 import PVTv2, convert_pvtv2_checkpoint
from .biformer import BiFormer, convert_biformer_checkpoint
from .vit_adapter import ViTAdapter, convert_vit_adapter_checkpoint

__all__ = [
    'BaseBackbone', 'PlainBackbone', 'VMamba', 'convert_vmamba_checkpoint', 'Vim',
    'convert_vim_checkpoint', 'VisionRWKV', 'convert_vision_rwkv_checkpoint', 'VisionRWKVAdapter',
    'PlainMamba',
    'convert_plain_mamba_checkpoint', 'MLLA',
    'convert_mlla_checkpoint', 'Swin', 'convert_swin_checkpoint', 'PVTv2',
    'convert_pvtv2_checkpoint', 'BiFormer', 'convert_biformer_checkpoint', 'ViTAdapter',
    'convert_vit_adapter_checkpoint'
]
