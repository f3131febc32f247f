#!/usr/bin/env python
"""Whole-backbone throughput: Vim-S and Vision-RWKV-S against a same-size
DeiT-style ViT built from plain attention (torch SDPA), at growing inputs.

The linear-time token mixers (selective scan, bidirectional WKV) are these
models' reason to exist: their cost grows with the number of tokens N, a
ViT's attention with N^2.  The script prints, per input size, forward time
(and forward+backward with --backward), images/s and the ratio to the ViT,
measured side by side in one run.  Never asserted.

    python benchmarks/bench_backbones.py                       # GPU, bf16 autocast
    python benchmarks/bench_backbones.py --device cpu --sizes 224 512 --iters 3
"""
import argparse
import os.path as osp
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from bench_selective_scan import Timer, header_info, md_table  # noqa: E402

from mmvisbackbones import build_backbone  # noqa: E402


class ViTBlock(nn.Module):

    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


class DeiTLike(nn.Module):
    """DeiT-S sized reference: patch 16, dim 384, 12 blocks, 6 heads (22M)."""

    def __init__(self, dim=384, depth=12, heads=6):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.patch(x).flatten(2).transpose(1, 2))


def add_run_args(p: argparse.ArgumentParser):
    """The options every whole-backbone benchmark takes (besides its sizes)."""
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--backward', action='store_true', help='time forward+backward')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--max-seconds', type=float, default=10.0)


def start(args):
    """Device and timer for ``args`` (bf16 autocast on CUDA, fp32 on CPU);
    prints the header (device, versions, date)."""
    device = torch.device(args.device)
    args.dtype = 'bf16 autocast' if device.type == 'cuda' else 'fp32'
    info = header_info(args, device)
    print('\n'.join(f'- {k}: {v}' for k, v in info.items()) + '\n')
    return device, Timer(device, args.warmup, args.iters, args.max_seconds, flush_l2=False)


def step(net: nn.Module, x: torch.Tensor, backward: bool):
    """The timed call: a forward (bf16 autocast on CUDA), and with
    ``backward`` a backward of the mean of every output."""
    net.train(backward)

    def run():
        with torch.autocast(x.device.type, dtype=torch.bfloat16,
                            enabled=x.device.type == 'cuda'):
            with torch.set_grad_enabled(backward):
                outs = net(x)
        if backward:
            outs = outs if isinstance(outs, (tuple, list)) else (outs, )
            sum(o.float().mean() for o in outs).backward()
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 512, 1024])
    add_run_args(p)
    args = p.parse_args(argv)
    device, timer = start(args)
    models = {
        'DeiT-S-like ViT (SDPA)': DeiTLike(),
        'Vim-S': build_backbone('vim_small', out_indices=(2, )),
        'Vision-RWKV-S': build_backbone('vrwkv_small', out_indices=(2, )),
    }
    rows = []
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size, device=device)
        base = None
        for name, net in models.items():
            try:
                t = timer(step(net.to(device), x, args.backward))[0]
            except Exception as e:  # noqa: BLE001 - e.g. out of memory at 1024
                rows.append([str(size), name, f'failed: {type(e).__name__}', '', ''])
                continue
            base = t if base is None else base
            rows.append([str(size), name, f'{t:.1f}', f'{args.batch * 1e3 / t:.1f}',
                         f'{t / base:.2f}'])
            print(f'[bench_backbones] {size} {name}: {t:.1f} ms', file=sys.stderr, flush=True)
    what = 'fwd+bwd' if args.backward else 'fwd'
    print(md_table(['input', 'model', f'{what} ms', 'img/s', 'time / ViT'], rows))
    print(f'\n{(args.sizes[-1] // 16)**2} tokens at {args.sizes[-1]}: attention is quadratic in '
          'tokens, the scan and WKV are linear.')


if __name__ == '__main__':
    main()
