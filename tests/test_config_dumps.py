"""Every config still merges to what it merged to before the configs were
rebuilt on one base per recipe (``configs/_base_/``): the stored snapshot of
the whole merged config (model, optimizer, schedules, pipelines, hooks), made
by ``tools/dev/dump_configs.py``.  An intended change of what a config trains
rewrites the snapshot (``--write``) in the same commit.

Also: every detection / segmentation config states its batch and the
``auto_scale_lr.base_batch_size`` its learning rate is for."""
import os.path as osp
import re
import sys

import pytest

from mm_helpers import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'dev'))
import dump_configs  # noqa: E402

CONFIGS = dump_configs.config_files()


@pytest.fixture(scope='module')
def snapshot():
    return dump_configs.read_snapshot()


def test_snapshot_covers_every_config(snapshot):
    assert sorted(snapshot) == CONFIGS


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_merges_to_snapshot(path, snapshot):
    diff = dump_configs.differences(snapshot[path], dump_configs.dump(path))
    assert not diff, (f'{path} now builds something else than the stored snapshot '
                      '(rewrite it with tools/dev/dump_configs.py --write only for an '
                      'intended change):\n' + '\n'.join(diff[:30]))


def test_differences_names_the_path():
    old = dict(model=dict(neck=dict(in_channels=[1, 2])), lr=1)
    new = dict(model=dict(neck=dict(in_channels=[1, 3])), wd=2)
    assert dump_configs.differences(old, new) == [
        'lr: removed (was 1)', 'model.neck.in_channels[1]: 2 -> 3', 'wd: added (2)']


#: recipe configs (not the CPU demos, whose single-process runs scale nothing)
RECIPES = [p for p in CONFIGS if not p.startswith(osp.join('configs', 'demo'))]


@pytest.mark.parametrize('path', RECIPES, ids=osp.basename)
def test_config_states_its_batch_and_lr_scaling(path, snapshot):
    cfg = snapshot[path]
    per_gpu = cfg['train_dataloader']['batch_size']
    base = cfg.get('auto_scale_lr', {}).get('base_batch_size')
    assert base, f'{path}: no auto_scale_lr.base_batch_size, so --auto-scale-lr cannot work'
    # NxbM in the file name (OpenMMLab's convention) is the total batch the lr is for;
    # the Mask R-CNN names carry none: their base says 8 GPUs x 2
    m = re.search(r'_(\d+)xb(\d+)-', osp.basename(path))
    gpus, per = (int(m.group(1)), int(m.group(2))) if m else (8, per_gpu)
    assert per == per_gpu, f'{path}: the name says {per} images per GPU, the config {per_gpu}'
    assert base == gpus * per_gpu, (
        f'{path}: lr is for a batch of {base}, but the recipe runs {gpus} x {per_gpu}')
