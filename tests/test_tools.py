"""tools/train.py and tools/test.py end to end on the generated COCO data:
train -> save -> test (CocoMetric) -> resume, as a user runs them."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from mm_helpers import ROOT, write_demo_cfg
from mmvisbackbones.datasets import make_coco_demo


def run(args, cwd):
    r = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True,
                       timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp('tools')
    make_coco_demo(str(ws / 'data' / 'coco'), num_train=8, num_val=4)
    cfg = write_demo_cfg(ws / 'demo.py', 'maskrcnn', ws / 'data' / 'coco', val_batch_size=2)
    return ws, str(cfg)


def test_train_save_test_resume(workspace):
    ws, cfg = workspace
    work = str(ws / 'work')
    train = [osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir', work]
    out = run(train + ['--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                       'default_hooks.checkpoint.interval=1'], cwd=ws)
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)

    # the Runner's own checkpoint holds non-tensor data the default
    # weights-only unpickler refuses; our allow-list admits exactly that
    probe = ('import sys, torch, pickle\n'
             'try:\n    torch.load(sys.argv[1], weights_only=True)\n'
             'except pickle.UnpicklingError:\n    print("REFUSED")\n'
             'import mmvisbackbones\n'
             'torch.load(sys.argv[1], weights_only=True)\nprint("LOADED")\n')
    out_probe = run(['-c', probe, ckpt], cwd=ws)
    assert 'REFUSED' in out_probe and 'LOADED' in out_probe

    out = run([osp.join(ROOT, 'tools', 'test.py'), cfg, ckpt, '--work-dir', work,
               '--out', str(ws / 'preds.pkl')], cwd=ws)
    m = re.search(r'coco/bbox_mAP: ([0-9.]+)', out)
    assert m, out[-3000:]
    assert osp.isfile(ws / 'preds.pkl')

    out = run(train + ['--resume', '--cfg-options', 'train_cfg.max_epochs=2',
                       'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=1'],
              cwd=ws)
    assert re.search(r'resumed epoch: 1, iter: \d+', out), out[-3000:]
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))
    state = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=True)
    assert state['meta']['epoch'] == 2


def test_test_tool_missing_checkpoint(workspace):
    ws, cfg = workspace
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), cfg,
                        str(ws / 'missing.pth')], cwd=ws, capture_output=True, text=True)
    assert r.returncode != 0 and 'checkpoint not found' in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message shown without a GPU')
@pytest.mark.parametrize('flags,env,msg', [
    (['--launcher', 'slurm'], {}, 'on CPUs start the ranks with torchrun'),
    (['--launcher', 'pytorch'], {'drop': 'MASTER_PORT'}, 'MASTER_PORT missing')])
def test_gpu_only_flags_fail_clearly_on_cpu(workspace, flags, env, msg):
    ws, cfg = workspace
    environ = dict(os.environ, RANK='0', WORLD_SIZE='1', LOCAL_RANK='0',
                   MASTER_ADDR='127.0.0.1', MASTER_PORT='29555')
    environ.pop(env.get('drop', ''), None)
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg] + flags,
                       cwd=ws, capture_output=True, text=True, env=environ)
    assert r.returncode != 0 and msg in r.stderr, r.stderr[-2000:]


def test_clean_checkpoint_for_files_with_training_objects(tmp_path):
    """A released checkpoint holding e.g. an argparse.Namespace is refused by
    the weights-only loader with a message naming tools/clean_checkpoint.py,
    which (only with --trust) writes a weights-only copy that loads."""
    import argparse
    from mmvisbackbones import build_backbone
    from mmvisbackbones.utils import load_pretrained
    net = build_backbone('vmamba_test')
    src, dst = tmp_path / 'released.pth', tmp_path / 'clean.pth'
    torch.save({'model': net.state_dict(), 'args': argparse.Namespace(lr=1)}, src)
    with pytest.raises(RuntimeError, match='clean_checkpoint.py'):
        load_pretrained(build_backbone('vmamba_test'), str(src))
    tool = [sys.executable, osp.join(ROOT, 'tools', 'clean_checkpoint.py'), str(src), str(dst)]
    r = subprocess.run(tool, capture_output=True, text=True)
    assert r.returncode != 0 and '--trust' in r.stderr and not dst.exists()
    r = subprocess.run(tool + ['--trust'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fresh = build_backbone('vmamba_test')
    load_pretrained(fresh, str(dst))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
