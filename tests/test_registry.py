"""Registration: once, in mmengine's root MODELS, visible from mmdet and mmseg
scopes, never shadowed by a class of theirs."""
import subprocess
import sys

import pytest
from mmengine.registry import MODELS, init_default_scope

from mmvisbackbones import BACKBONES
from zoo import ZOO

NAMES = sorted(BACKBONES)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_builds_in_scope(scope, name):
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS as SCOPED
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS as SCOPED
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    # the scope's own registry has no class of that name: ours is not shadowed
    assert name not in SCOPED.module_dict, f'{scope} registers its own {name}'
    net = SCOPED.build(dict(type=name, **ZOO[name]['kwargs']))
    assert type(net) is BACKBONES[name]


@pytest.mark.parametrize('name', NAMES)
def test_registered_once_in_root(name):
    assert MODELS.module_dict[name] is BACKBONES[name]


def test_import_needs_only_torch_and_mmengine():
    code = ('import sys\n'
            'for m in ("mmcv", "mmdet", "mmseg"):\n    sys.modules[m] = None\n'
            'import torch, mmvisbackbones\n'
            'net = mmvisbackbones.build_backbone("vmamba_test")\n'
            'print([tuple(o.shape) for o in net(torch.randn(1, 3, 64, 64))])\n'
            'assert not any(m.startswith(("mmcv", "mmdet", "mmseg")) and sys.modules[m] '
            'for m in sys.modules)\n')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '(1, 16, 16, 16)' in r.stdout
