"""Where the backbones are registered.

Every backbone is registered once in mmengine's *root* ``MODELS`` registry.
mmdet's and mmseg's ``MODELS`` are children of it, so ``type='VMamba'``
resolves from inside either scope (a child registry falls back to its parent
when it has no class of that name).  Names are chosen so that they never
collide with a class mmdet or mmseg register themselves (inside their scope
theirs would be found first and ours silently shadowed).
"""
from typing import Dict, Type

from mmengine.registry import MODELS

#: name -> class of every backbone this package provides, in registration order.
BACKBONES: Dict[str, Type] = {}


def register_backbone(cls):
    """Class decorator: register ``cls`` in mmengine's root MODELS and in
    :data:`BACKBONES` (the zoo the tests and the README table iterate)."""
    MODELS.register_module(module=cls)
    BACKBONES[cls.__name__] = cls
    return cls
