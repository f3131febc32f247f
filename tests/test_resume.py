"""Crash safety of tools/train.py: a run killed with SIGKILL in the middle of an
epoch and restarted with --resume ends with the same weights as an
uninterrupted run, bit for bit (CPU, fixed seed, same data order; the random
states travel in the checkpoint); a kill while a checkpoint is being written
leaves the previous one whole, and --resume never picks the half-written
file."""
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import torch

from mm_helpers import ROOT, write_demo_cfg
from mmvisbackbones.datasets import make_coco_demo
from mmvisbackbones.engine import find_resume_checkpoint

TRAIN = osp.join(ROOT, 'tools', 'train.py')
EPOCHS = 3


def train(cfg, work, cwd, *extra, kill_env=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [osp.join(ROOT, 'tests'), os.environ.get('PYTHONPATH', '')]))
    env.pop('MMVB_KILL_AT', None)
    env.pop('MMVB_KILL_IN_SAVE', None)
    env.update(kill_env or {})
    r = subprocess.run([sys.executable, TRAIN, cfg, '--work-dir', str(work), *extra], cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=900)
    return r.returncode, r.stdout + r.stderr


def weights(path):
    return torch.load(path, weights_only=True)['state_dict']


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    ws = tmp_path_factory.mktemp('resume')
    make_coco_demo(str(ws / 'data' / 'coco'), num_train=4, num_val=2)
    cfg = write_demo_cfg(ws / 'cfg.py', 'maskrcnn', ws / 'data' / 'coco', f"""
custom_imports = dict(imports=['mmvisbackbones', 'crash_hooks'], allow_failed_imports=False)
custom_hooks = [dict(type='KillHook')]
model = dict(backbone=dict(arch='test', drop_path_rate=0.2),
             neck=dict(in_channels=[16, 32, 64, 128]))
train_cfg = dict(max_epochs={EPOCHS}, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1))
randomness = dict(seed=0)
""")
    # the reference: the same run, never interrupted
    rc, log = train(cfg, ws / 'ref', ws)
    assert rc == 0, log[-4000:]
    return ws, cfg


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(setup):
    ws, cfg = setup
    work = ws / 'killed'
    rc, log = train(cfg, work, ws, kill_env={'MMVB_KILL_AT': '2,1'})
    assert rc == -signal.SIGKILL, log[-3000:]
    assert 'KillHook: SIGKILL at epoch 2 iter 1' in log
    assert not osp.exists(work / f'epoch_{EPOCHS}.pth')
    rc, log = train(cfg, work, ws, '--resume')
    assert rc == 0, log[-4000:]
    assert 'resumed epoch: 2' in log and 'Restored the random states' in log
    assert_same_weights(work / f'epoch_{EPOCHS}.pth', ws / 'ref' / f'epoch_{EPOCHS}.pth')


def test_kill_while_saving_keeps_the_previous_checkpoint(setup):
    ws, cfg = setup
    work = ws / 'killed_in_save'
    rc, log = train(cfg, work, ws, kill_env={'MMVB_KILL_IN_SAVE': '2'})
    assert rc == -signal.SIGKILL, log[-3000:]
    left = sorted(os.listdir(work))
    # epoch 2's bytes went to a temporary name; no half file under a checkpoint's name
    assert 'epoch_2.pth' not in left and 'epoch_1.pth' in left, left
    assert any(f.startswith('.tmp-') and f.endswith('epoch_2.pth') for f in left), left
    torch.load(work / 'epoch_1.pth', weights_only=True)  # whole
    assert find_resume_checkpoint(str(work)) == str(work / 'epoch_1.pth')
    rc, log = train(cfg, work, ws, '--resume')
    assert rc == 0, log[-4000:]
    assert 'resumed epoch: 1' in log
    assert_same_weights(work / f'epoch_{EPOCHS}.pth', ws / 'ref' / f'epoch_{EPOCHS}.pth')


def test_find_resume_checkpoint_without_a_usable_last_checkpoint(tmp_path):
    assert find_resume_checkpoint(str(tmp_path)) is None
    for i, name in enumerate(['epoch_1.pth', 'epoch_2.pth', '.tmp-7-epoch_3.pth']):
        (tmp_path / name).write_bytes(b'x')
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    # no last_checkpoint file: the newest complete checkpoint, never a temporary
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text('')  # emptied by a kill while written
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_1.pth')
