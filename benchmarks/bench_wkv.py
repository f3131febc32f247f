#!/usr/bin/env python
"""Bidirectional WKV (Vision-RWKV) forward and forward+backward timing per
backend, at the token counts of 224 / 512 / 1024 inputs (patch 16), side by
side in one run.  Prints device / torch / triton versions; never asserts.

    python benchmarks/bench_wkv.py                      # GPU: triton vs torch
    python benchmarks/bench_wkv.py --device cpu         # CPU: torch vs naive
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from bench_selective_scan import Timer, header_info, md_table  # noqa: E402

from mmvisbackbones.ops import bi_wkv  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--backends', default=None)
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 512, 1024])
    p.add_argument('--channels', type=int, default=384, help='VRWKV-S width')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--naive-max-tokens', type=int, default=1024)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--max-seconds', type=float, default=5.0)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    args.dtype = 'bf16' if device.type == 'cuda' else 'fp32'
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    backends = (args.backends or ('triton,torch' if device.type == 'cuda' else 'torch,naive'))
    backends = backends.split(',')
    print('\n'.join(f'- {k}: {v}' for k, v in header_info(args, device).items()) + '\n')
    timer = Timer(device, args.warmup, args.iters, args.max_seconds, flush_l2=True)
    rows = []
    C = args.channels
    for size in args.sizes:
        T = (size // 16)**2
        w = (torch.linspace(-5, 3, C, device=device) / T).requires_grad_(True)
        u = (torch.randn(C, device=device) / T).requires_grad_(True)
        k = torch.randn(args.batch, T, C, device=device).to(dtype).requires_grad_(True)
        v = torch.randn(args.batch, T, C, device=device).to(dtype).requires_grad_(True)
        base = None
        for be in backends:
            if be == 'naive' and T > args.naive_max_tokens:
                rows.append([str(size), str(T), be, 'skipped (O(T^2) memory)', '', '', ''])
                continue
            fwd = timer(lambda: bi_wkv(w, u, k, v, backend=be))[0]
            fb = timer(lambda: bi_wkv(w, u, k, v, backend=be).float().sum().backward())[0]
            base = base or (fwd, fb)
            rows.append([str(size), str(T), be, f'{fwd:.2f}', f'{fb:.2f}', f'{fb / fwd:.2f}',
                         f'{fwd / base[0]:.2f} / {fb / base[1]:.2f}'])
            print(f'[bench_wkv] {size} {be}: {fwd:.2f} / {fb:.2f} ms', file=sys.stderr)
    print(md_table(['input', 'tokens', 'backend', 'fwd ms', 'fwd+bwd ms', '(f+b)/f',
                    f'time / {backends[0]} (fwd / f+b)'], rows))


if __name__ == '__main__':
    main()
