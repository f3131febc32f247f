"""Distributed training with the real engine on CPUs: torch.distributed over
gloo, two processes started by torchrun, mmengine's MMDistributedDataParallel
with ``find_unused_parameters=False`` and our Runner (tools/train.py and
tools/test.py under ``--launcher pytorch``)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mm_helpers import ROOT, write_demo_cfg
from mmvisbackbones.datasets import make_ade_demo, make_coco_demo
from mmvisbackbones.engine import refuse_sync_bn_on_cpu

WORKER = osp.join(ROOT, 'tests', 'dist_worker.py')
pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason='the CPU (gloo) path; GPUs take nccl')


def torchrun(args, cwd, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2'] + args
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist_data')
    make_coco_demo(str(root / 'coco'), num_train=8, num_val=4)
    make_ade_demo(str(root / 'ade'), num_train=4, num_val=2)
    return root


def run_worker(mode, data_root, tmp_path):
    out = tmp_path / f'{mode}.json'
    rc, log = torchrun([WORKER, mode, str(data_root), str(out)], cwd=tmp_path)
    assert rc == 0, log[-4000:]
    results = json.loads(out.read_text())
    assert results.pop('_world_size') == 2
    return results


def test_every_family_in_mask_rcnn_upernet_dino_without_find_unused(data_root, tmp_path):
    """MMDistributedDataParallel(find_unused_parameters=False): DDP stops at
    the next forward if any parameter got no gradient; after the steps the
    two ranks hold the same parameters, bit for bit, having trained on
    different images."""
    results = run_worker('consumers', data_root, tmp_path)
    from zoo import ZOO
    assert sorted(results) == sorted([f'maskrcnn/{b}' for b in ZOO] +
                                     ['upernet/Swin', 'dino/VMamba'])
    for name, r in results.items():
        assert 'error' not in r, f'{name}: {r.get("error")}\n{r.get("trace", "")}'
        assert r['identical'], name
        assert all(torch.isfinite(torch.tensor(r['losses']))), name
        first0, first1 = r['first_batch_by_rank']
        assert first0 and first1 and not set(first0) & set(first1), name  # sharded data


def test_out_indices_subsets_leave_no_parameter_without_gradient(data_root, tmp_path):
    """The stages after the last output are never run; they are frozen, so
    DDP's default (find_unused_parameters=False) holds for any subset (the
    old code failed here with 'Expected to have finished reduction')."""
    results = run_worker('subsets', data_root, tmp_path)
    from dist_worker import SUBSETS
    from zoo import ZOO
    assert len(results) == len(ZOO) * len(SUBSETS)
    for name, r in results.items():
        assert 'error' not in r, f'{name}: {r["error"]}'
        assert r['identical'], name


def test_two_ranks_of_batch_2_equal_one_process_of_batch_4(data_root, tmp_path):
    """One SGD step: DDP's gradient average over 2 x 2 images equals the
    gradient of the 4-image batch up to float32 summation order (stated
    tolerance: rtol 1e-5, atol 1e-6, against updates of order 0.1)."""
    r = run_worker('equivalence', data_root, tmp_path)['VMamba']
    assert r['world'] == 2 and r['identical']
    assert r['max_update'] > 1e-2  # the step moved the weights
    assert r['allclose'], r
    assert r['max_abs_diff'] < 1e-5


@pytest.fixture(scope='module')
def demo_cfgs(data_root, tmp_path_factory):
    ws = tmp_path_factory.mktemp('dist_cfgs')
    write_demo_cfg(ws / 'maskrcnn.py', 'maskrcnn', data_root / 'coco', """
model = dict(backbone=dict(arch='test'), neck=dict(in_channels=[16, 32, 64, 128]))
train_cfg = dict(max_epochs=1, val_interval=1)
""")
    write_demo_cfg(ws / 'upernet.py', 'upernet', data_root / 'ade' / 'ADEChallengeData2016')
    return ws


def test_train_checkpoint_test_under_the_launcher(demo_cfgs):
    """tools/train.py and tools/test.py under torchrun --launcher pytorch:
    both ranks train and validate, rank 0 alone writes the checkpoint (one
    file, complete, no temporary left), the test tool evaluates it on both
    ranks, and both exit cleanly."""
    ws = demo_cfgs
    work = ws / 'work'
    rc, log = torchrun([osp.join(ROOT, 'tools', 'train.py'), str(ws / 'maskrcnn.py'),
                        '--work-dir', str(work), '--launcher', 'pytorch'], cwd=ws)
    assert rc == 0, log[-4000:]
    assert 'Distributed on CPUs (gloo, 2 ranks)' in log
    assert 'coco/bbox_mAP' in log and 'terminate called' not in log
    files = sorted(f for f in os.listdir(work) if osp.isfile(work / f))
    assert files == ['epoch_1.pth', 'last_checkpoint', 'maskrcnn.py'], files  # + config dump
    ckpt = torch.load(work / 'epoch_1.pth', weights_only=True)
    assert ckpt['meta']['epoch'] == 1 and 'rng_state' in ckpt
    rc, log = torchrun([osp.join(ROOT, 'tools', 'test.py'), str(ws / 'maskrcnn.py'),
                        str(work / 'epoch_1.pth'), '--work-dir', str(work),
                        '--launcher', 'pytorch'], cwd=ws)
    assert rc == 0, log[-4000:]
    assert 'coco/bbox_mAP' in log and 'terminate called' not in log


def test_sync_bn_on_cpus_is_refused_with_the_layers_named(demo_cfgs):
    """mmseg's UperNet heads are SyncBN: on CPUs the run stops before
    training with the layers and the fix, not inside torch's DDP."""
    ws = demo_cfgs
    rc, log = torchrun([osp.join(ROOT, 'tools', 'train.py'), str(ws / 'upernet.py'),
                        '--work-dir', str(ws / 'work_seg'), '--launcher', 'pytorch'], cwd=ws)
    assert rc != 0
    assert 'SyncBN layers (decode_head.' in log and "norm_cfg=dict(type='BN')" in log, log[-3000:]
    assert 'only work with GPU modules' not in log


def test_refuse_sync_bn_names_layers_and_the_config_switch():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.SyncBatchNorm(4))
    with pytest.raises(RuntimeError, match=r'SyncBN layers \(1\) need CUDA'):
        refuse_sync_bn_on_cpu(net)
    with pytest.raises(RuntimeError, match="cfg.sync_bn='torch'"):
        refuse_sync_bn_on_cpu(torch.nn.Conv2d(3, 4, 1), 'torch')
    refuse_sync_bn_on_cpu(torch.nn.Sequential(torch.nn.BatchNorm2d(4)))  # BN is fine
