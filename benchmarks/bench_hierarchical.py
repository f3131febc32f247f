#!/usr/bin/env python
"""Detection-size throughput of the hierarchical backbones, side by side:
Swin-T (the anchor), VMamba-T, MLLA-T, PVTv2-B2 and BiFormer-T (n_win 16,
its detection setting), all four outputs, at detection input sizes.

Prints per input: time (forward, or forward+backward with --backward),
images/s, the backbone's GMACs (``mmvisbackbones.utils.count_flops``),
achieved GMAC/s, the ratio to Swin-T measured in the same run and, on CUDA,
the peak memory.  Never asserted.

    python benchmarks/bench_hierarchical.py                       # GPU, bf16 autocast
    python benchmarks/bench_hierarchical.py --device cpu --sizes 512x512 800x1280 --iters 2
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from bench_backbones import add_run_args, start, step  # noqa: E402
from bench_selective_scan import md_table  # noqa: E402

from mmvisbackbones import BACKBONES  # noqa: E402
from mmvisbackbones.utils import count_flops  # noqa: E402

#: label -> (registered class, kwargs); the first is the anchor of the ratios
MODELS = {
    'Swin-T': ('Swin', dict(arch='tiny')),
    'VMamba-T': ('VMamba', dict(arch='tiny')),
    'MLLA-T': ('MLLA', dict(arch='tiny')),
    'PVTv2-B2': ('PVTv2', dict(arch='b2')),
    'BiFormer-T (n_win 16)': ('BiFormer', dict(arch='tiny', n_win=16)),
}


def parse_size(s: str):
    try:
        h, w = (int(v) for v in s.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must be HxW (e.g. 800x1280), got {s!r}')
    return h, w


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=parse_size, nargs='+',
                   default=[(512, 512), (800, 1280)], help='inputs as HxW')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    add_run_args(p)
    args = p.parse_args(argv)
    device, timer = start(args)
    rows = []
    for H, W in args.sizes:
        x = torch.randn(args.batch, 3, H, W, device=device)
        base = None
        for label in args.models:
            cls_name, kw = MODELS[label]
            with torch.device('meta'):
                macs = count_flops(BACKBONES[cls_name](**kw), (args.batch, 3, H, W))['total']
            net = BACKBONES[cls_name](**kw).to(device)
            run = step(net, x, args.backward)
            if device.type == 'cuda':
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                t = timer(run)[0]
            except Exception as e:  # noqa: BLE001 - e.g. out of memory
                rows.append([f'{H}x{W}', label, f'failed: {type(e).__name__}'] + [''] * 5)
                continue
            peak = (f'{torch.cuda.max_memory_allocated(device) / 2**20:.0f}'
                    if device.type == 'cuda' else 'n/a')
            base = t if base is None else base
            gmacs = macs / 1e9
            factor = 3 if args.backward else 1  # backward ~ 2x the forward's MACs
            rows.append([f'{H}x{W}', label, f'{t:.1f}', f'{args.batch * 1e3 / t:.2f}',
                         f'{gmacs:.1f}', f'{factor * gmacs / (t / 1e3):.1f}',
                         f'{t / base:.2f}', peak])
            print(f'[bench_hierarchical] {H}x{W} {label}: {t:.1f} ms', file=sys.stderr,
                  flush=True)
            del net
    what = 'fwd+bwd' if args.backward else 'fwd'
    print(md_table(['input', 'model', f'{what} ms', 'img/s', 'GMACs (fwd)', 'GMAC/s',
                    f'time / {args.models[0]}', 'peak MiB'], rows))


if __name__ == '__main__':
    main()
