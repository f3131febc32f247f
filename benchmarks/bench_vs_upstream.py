#!/usr/bin/env python
"""Ours vs upstream VMamba's own CPU path, same weights, side by side in one
process: ``VMamba(arch='tiny')`` against upstream's ``Backbone_VSSM`` built
as ``vmamba_tiny_s1l8`` (depths 2-2-8-2, dims 96, d_state 1, ssm_ratio 1,
forward type v05_noz, ln2d, downsample v3, patch embed v2), imported from a
checkout you provide (nothing of upstream is copied here)::

    git clone https://github.com/MzeroMiko/VMamba /path/to/VMamba
    python benchmarks/bench_vs_upstream.py --vmamba-repo /path/to/VMamba

Upstream's state dict goes through our converter and is loaded strictly into
ours; before any timing the four eval outputs of both are compared at the
eval input.  Drop path is 0.2 on both sides (VMamba-T's detection value);
train-mode cases run with it on.  Upstream's optional imports (timm, fvcore,
einops) are replaced by the stand-ins of ``tools/dev/make_vmamba_parity_fixture.py``.

Cases, timing and the table are those of ``bench_vs_mmdet.py`` (interleaved
rounds, order swapped every round, medians and the median per-round ratio):
``eval_fwd`` (512x512, batch 1, no_grad) and ``train_fwd_bwd`` (256x256,
batch 2, forward + backward).  Both sides run their CPU paths: ours the
chunked torch scan, upstream its PyTorch fallback scan.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import platform
import shlex
import statistics
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'dev'))
from bench_vs_mmdet import CASES, make_call, md_table, time_pair  # noqa: E402
from make_vmamba_parity_fixture import stub_optional_deps  # noqa: E402

from mmvisbackbones import BACKBONES  # noqa: E402
from mmvisbackbones.backbones.vmamba import convert_vmamba_checkpoint  # noqa: E402

DROP_PATH = 0.2
TINY = dict(depths=[2, 2, 8, 2], dims=96, ssm_d_state=1, ssm_ratio=1.0, ssm_dt_rank='auto',
            ssm_conv=3, ssm_conv_bias=False, forward_type='v05_noz', mlp_ratio=4.0,
            downsample_version='v3', patchembed_version='v2', norm_layer='ln2d')


def build_pair(repo: str, arch: str):
    stub_optional_deps()
    sys.path.insert(0, osp.join(repo, 'classification', 'models'))
    import vmamba as upstream
    torch.manual_seed(0)
    kw = dict(TINY)
    if arch == 'test':  # a small stand-in for a quick check of the script itself
        kw.update(depths=[1, 1, 2, 1], dims=16, mlp_ratio=2.0)
    peer = upstream.Backbone_VSSM(out_indices=(0, 1, 2, 3), pretrained=None,
                                  drop_path_rate=DROP_PATH, **kw)
    with torch.no_grad():
        for p in peer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ours = BACKBONES['VMamba'](arch=arch, drop_path_rate=DROP_PATH)
    ours.load_state_dict(convert_vmamba_checkpoint(peer.state_dict()), strict=True)
    return ours, peer


def check_same(ours, peer, size):
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    ours.eval()
    peer.eval()
    with torch.no_grad():
        a, b = ours(x), peer(x)
    worst = 0.0
    for o, r in zip(a, b):
        assert o.shape == r.shape, (o.shape, r.shape)
        err = (o - r).abs().max().item()
        assert err <= 1e-4 * r.abs().max().item() + 1e-5, f'outputs differ by {err:.3e}'
        worst = max(worst, err)
    return worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--vmamba-repo', required=True, help='a checkout of MzeroMiko/VMamba')
    p.add_argument('--arch', default='tiny', choices=['tiny', 'test'])
    p.add_argument('--cases', nargs='+', default=['eval_fwd', 'train_fwd_bwd'],
                   choices=['eval_fwd', 'train_fwd_bwd'])
    p.add_argument('--eval-size', type=int, default=512)
    p.add_argument('--train-size', type=int, default=256)
    p.add_argument('--train-batch', type=int, default=2)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--json')
    args = p.parse_args(argv)
    CASES['eval_fwd'] = ('eval', args.eval_size, 1)
    CASES['train_fwd_bwd'] = ('train_bwd', args.train_size, args.train_batch)
    torch.set_num_threads(args.threads)
    os.environ.setdefault('MMVB_SCAN_BACKEND', 'torch')
    info = {
        'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'device': f'CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores',
        'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
        'arch': args.arch, 'rounds': args.rounds, 'warmup': args.warmup,
        'command': ' '.join(shlex.quote(a) for a in ['python'] + sys.argv),
    }
    print('\n'.join(f'- {k}: {v}' for k, v in info.items()) + '\n', flush=True)
    ours, peer = build_pair(args.vmamba_repo, args.arch)
    worst = check_same(ours, peer, args.eval_size)
    print(f'[check] VMamba-{args.arch}: eval outputs match upstream\'s (max |diff| '
          f'{worst:.1e})', flush=True)
    results = []
    for case in args.cases:
        t = time_pair({'ours': make_call(ours, case), 'upstream': make_call(peer, case)},
                      args.warmup, args.rounds)
        mo, mu = statistics.median(t['ours']), statistics.median(t['upstream'])
        per_round = statistics.median(b / a for a, b in zip(t['ours'], t['upstream']))
        mode, size, batch = CASES[case]
        results.append(dict(case=case, size=size, batch=batch, ours_ms=mo, upstream_ms=mu,
                            upstream_over_ours=mu / mo, per_round_ratio=per_round,
                            ours_all_ms=t['ours'], upstream_all_ms=t['upstream']))
        print(f'[bench_vs_upstream] {case}: ours {mo:.1f} ms, upstream {mu:.1f} ms, '
              f'upstream/ours {mu / mo:.2f}', file=sys.stderr, flush=True)
    rows = [[f'VMamba-{args.arch}', r['case'], f"{r['size']}x{r['size']}", r['batch'],
             f"{r['ours_ms']:.1f}", f"{r['upstream_ms']:.1f}", f"{r['upstream_over_ours']:.2f}",
             f"{r['per_round_ratio']:.2f}"] for r in results]
    print('\n' + md_table(['model', 'case', 'input', 'batch',
                           f'ours ms (median of {args.rounds})', 'upstream ms',
                           'upstream / ours', 'median of per-round upstream / ours'], rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(info=info, results=results), f, indent=1)
    return results


if __name__ == '__main__':
    main()
