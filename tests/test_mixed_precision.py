"""Mixed precision on the CPU: ``AutocastOptimWrapper`` (bf16 autocast, what
``tools/train.py --amp`` uses without a GPU) trains the demo Mask R-CNN with
every backbone family and stays finite; the short version of
tools/dev/mixed_precision_run.py (whose long runs are in BENCHMARKS.md)."""
import math
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

from mm_helpers import batches, build_in_scope, demo_cfg, write_demo_cfg
from zoo import ZOO
from mmvisbackbones.datasets import make_coco_demo
from mmvisbackbones.engine.optim import AutocastOptimWrapper, enable_fp32_islands

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ITERS = 4


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('mp_data')
    make_coco_demo(str(root / 'coco'), num_train=4, num_val=2)
    return str(root)


def run(backbone, data_root, wrapper):
    cfg = demo_cfg('maskrcnn', data_root, backbone=backbone)
    torch.manual_seed(0)
    np.random.seed(0)  # the pipeline's random flips
    model = build_in_scope(cfg, 'maskrcnn')
    model.init_weights()
    ow = build_optim_wrapper(model, dict(wrapper, optimizer=dict(type='AdamW', lr=2e-4)))
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True, seed=0)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    seen = {}

    def record(module, inputs, outputs):  # returns None: the outputs stay as they are
        if 'feat' not in seen:  # the first batch's stride-4 features
            seen.update(feat=outputs[0].detach().float())

    def record_dtype(module, inputs, output):  # what the backbone's matmuls ran in
        seen.setdefault('dtype', output.dtype)

    handles = [model.backbone.register_forward_hook(record)] + [
        m.register_forward_hook(record_dtype) for m in model.backbone.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    losses = [float(model.train_step(batch, ow)['loss']) for batch in batches(loader, ITERS)]
    for h in handles:
        h.remove()
    return losses, model, seen


@pytest.mark.parametrize('backbone', sorted(ZOO))
def test_bf16_autocast_trains_every_family_finite(backbone, data_root):
    losses, model, seen = run(backbone, data_root,
                              dict(type='AutocastOptimWrapper', dtype='bfloat16'))
    assert seen['dtype'] == torch.bfloat16  # the backbone really ran under autocast
    assert all(math.isfinite(v) for v in losses), losses
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32
               for p in model.parameters())  # fp32 master weights
    ref, _, ref_seen = run(backbone, data_root, dict(type='OptimWrapper'))
    assert ref_seen['dtype'] == torch.float32
    # the same weights and the same first batch: the features differ by bf16
    # rounding only (the losses also move with which proposals NMS keeps)
    a, b = seen['feat'], ref_seen['feat']
    assert a.shape == b.shape
    assert (a - b).abs().max() / b.abs().max() < 0.05


def test_recurrence_state_stays_fp32_under_autocast():
    """The scans take bf16 inputs under autocast and keep their state and
    output in fp32 (out_fp32), so the long recurrences do not accumulate in
    bf16."""
    from mmvisbackbones.ops import selective_scan
    Bt, D, L, N = 1, 4, 33, 2
    u, delta = torch.randn(Bt, D, L).bfloat16(), torch.randn(Bt, D, L).bfloat16()
    A = -torch.rand(D, N) - 0.5
    B, C = torch.randn(Bt, 1, N, L).bfloat16(), torch.randn(Bt, 1, N, L).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y, last = selective_scan(u, delta, A, B, C, delta_softplus=True, out_fp32=True,
                                 return_last_state=True)
    assert y.dtype == torch.float32 and last.dtype == torch.float32


def test_mmcv_ops_without_bf16_kernels_run_as_fp32_islands():
    """mmcv's CPU NMS and RoIAlign have no bf16 kernels: under autocast their
    inputs go in as fp32 and their outputs come back in the caller's dtype;
    outside autocast nothing changes."""
    from mmcv.ops import nms, roi_align
    assert set(enable_fp32_islands()) == {'mmcv.ops.nms.NMSop',
                                          'mmcv.ops.roi_align.RoIAlignFunction'}
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    feats = torch.randn(1, 2, 16, 16)
    rois = torch.tensor([[0., 1., 1., 9., 9.]])
    ref_keep = nms(boxes, scores, 0.5)[1]
    ref_roi = roi_align(feats, rois, (4, 4), 1.0, 2, 'avg', True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        dets, keep = nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
        out = roi_align(feats.bfloat16(), rois.bfloat16(), (4, 4), 1.0, 2, 'avg', True)
    assert torch.equal(keep, ref_keep) and dets.dtype == torch.bfloat16
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref_roi, rtol=2e-2, atol=2e-2)


def test_wrapper_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match='dtype must be one of'):
        AutocastOptimWrapper(dtype='int8', optimizer=torch.optim.SGD(
            [torch.nn.Parameter(torch.zeros(1))], lr=0.1))


@pytest.mark.skipif(torch.cuda.is_available(), reason='on GPUs --amp is fp16 AmpOptimWrapper')
def test_train_tool_amp_on_cpu_uses_bf16_autocast(data_root, tmp_path):
    import subprocess
    cfg = write_demo_cfg(tmp_path / 'cfg.py', 'maskrcnn', osp.join(data_root, 'coco'),
                         'train_cfg = dict(max_epochs=1, val_interval=100)\n')
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(cfg), '--amp',
                        '--work-dir', str(tmp_path / 'work')], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert 'bf16 autocast on the CPU (AutocastOptimWrapper)' in out
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')


@pytest.mark.skipif(not torch.amp.autocast_mode.is_autocast_available('cpu'),
                    reason='needs CPU autocast')
def test_fp16_autocast_on_the_cpu_stays_finite(data_root):
    """fp16 autocast, which the CPU supports in this torch (slowly): the
    recurrent family, whose state stays fp32, trains finite."""
    losses, model, seen = run('VMamba', data_root,
                              dict(type='AutocastOptimWrapper', dtype='float16'))
    assert seen['dtype'] == torch.float16
    assert all(math.isfinite(v) for v in losses), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
