"""The ops only need torch. If the top-level ``mmvisbackbones`` package cannot
be imported because an OpenMMLab dependency (mmengine, ...) is not installed,
load ``mmvisbackbones.ops`` through a bare parent package so these tests still
run with torch alone. Any other import error is raised as usual."""
import os
import sys
import types
import warnings

_OPENMMLAB = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain')
PKG_DIR = os.path.abspath(
    os.path.join(os.path.dirname(__file__), '..', '..', 'mmvisbackbones'))

try:
    import mmvisbackbones  # noqa: F401
except ModuleNotFoundError as err:
    if (err.name or '').split('.')[0] not in _OPENMMLAB:
        raise
    warnings.warn(f'mmvisbackbones could not be imported ({err}); testing '
                  f'mmvisbackbones.ops through a bare parent package')
    pkg = types.ModuleType('mmvisbackbones')
    pkg.__path__ = [PKG_DIR]
    sys.modules['mmvisbackbones'] = pkg
