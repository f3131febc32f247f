"""Plain-PyTorch entry point, like timm's ``features_only`` models::

    from mmvisbackbones import build_backbone
    net = build_backbone('vmamba_tiny', out_indices=(1, 2, 3))
    feats = net(images)          # tuple of NCHW maps, strides 8, 16, 32
    net.out_channels, net.out_strides
"""
from typing import Dict, List, Tuple

from .registry import BACKBONES


def _names() -> Dict[str, Tuple[type, str]]:
    names = {}
    for cls in BACKBONES.values():
        for arch in cls.arch_zoo:
            names[f'{cls.model_name}_{arch}'] = (cls, arch)
    return names


def list_models() -> List[str]:
    """Names accepted by :func:`build_backbone`, e.g. ``'vmamba_tiny'``."""
    return sorted(_names())


def build_backbone(name: str, **kwargs):
    """Build ``<family>_<arch>`` (see :func:`list_models`) with keyword
    overrides (out_indices, drop_path_rate, init_cfg, ...)."""
    names = _names()
    if name not in names:
        raise ValueError(f'unknown backbone {name!r}; available: {", ".join(sorted(names))}')
    cls, arch = names[name]
    return cls(arch=arch, **kwargs)
