"""mmvisbackbones: modern vision backbones for OpenMMLab detection and segmentation.

``import mmvisbackbones`` registers every backbone once in mmengine's root
``MODELS`` registry, so ``type='VMamba'`` builds from mmdet and mmseg configs
(load it from any config with
``custom_imports=dict(imports=['mmvisbackbones'], allow_failed_imports=False)``).
It also registers ``runner_type='MMVBRunner'`` (mmengine's Runner plus CPU
distributed runs, atomic checkpoints and exact resume; see
:mod:`mmvisbackbones.engine`).  Needs only torch and mmengine; mmcv, mmdet
and mmseg are needed by the configs and tools, not by the backbones.

It also lets mmengine load this package's configs by name, as it does mmdet's:
``_base_ = 'mmvisbackbones::vmamba/mask-rcnn_vmamba-t_fpn_1x_coco.py'`` (from
``mmvisbackbones/.mim/configs`` of the installed package; import
mmvisbackbones before ``Config.fromfile``, as tools/train.py does).
"""
from .version import __version__
from .utils.serialization import register_safe_globals
from . import ops  # noqa: F401  (before backbones, which use them)
from .backbones import (BaseBackbone, BiFormer, MLLA, PlainMamba, PVTv2, Swin, ViTAdapter, Vim,
                        VisionRWKV, VisionRWKVAdapter, VMamba, convert_biformer_checkpoint,
                        convert_mlla_checkpoint, convert_plain_mamba_checkpoint,
                        convert_pvtv2_checkpoint, convert_swin_checkpoint, convert_vim_checkpoint,
                        convert_vision_rwkv_checkpoint, convert_vit_adapter_checkpoint,
                        convert_vmamba_checkpoint)
from .registry import BACKBONES
from .models import build_backbone, list_models
from . import engine  # noqa: F401  (registers MMVBRunner and RNGStateHook)

# let --resume and tools/test.py read the checkpoints mmengine's Runner
# writes, without turning off weights_only (see utils/serialization.py)
register_safe_globals()


def _register_config_package():
    """mmengine resolves ``'<module>::<config>'`` only for the packages of its
    ``MODULE2PACKAGE`` table: add ours (module and pip name are the same)."""
    from mmengine.config import utils as cfg_utils
    cfg_utils.MODULE2PACKAGE.setdefault('mmvisbackbones', 'mmvisbackbones')


_register_config_package()

__all__ = [
    '__version__', 'BACKBONES', 'build_backbone', 'list_models', 'BaseBackbone', 'VMamba',
    'convert_vmamba_checkpoint', 'Vim', 'convert_vim_checkpoint', 'VisionRWKV',
    'convert_vision_rwkv_checkpoint', 'VisionRWKVAdapter', 'PlainMamba',
    'convert_plain_mamba_checkpoint', 'MLLA', 'convert_mlla_checkpoint', 'Swin',
    'convert_swin_checkpoint', 'PVTv2', 'convert_pvtv2_checkpoint', 'BiFormer',
    'convert_biformer_checkpoint', 'ViTAdapter', 'convert_vit_adapter_checkpoint'
]
