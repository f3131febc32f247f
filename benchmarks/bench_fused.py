#!/usr/bin/env python
"""Fused scans vs their unfused compositions, side by side in one run.

* SS2D (VMamba): ``ss2d_scan`` (one kernel walking the four cross-scan
  orders over the spatial map) vs ``cross_scan -> selective_scan ->
  cross_merge`` as upstream runs it (inputs already in scan order, so the
  unfused side is not charged for reordering delta/B/C).
* Bidirectional (Vim): ``bidirectional_scan`` (one kernel, direction 1 walks
  backwards) vs two ``selective_scan`` calls with flipped copies.

Times forward and forward+backward (median, CUDA events), and on CUDA the
peak memory of forward+backward.  Prints device / torch / triton versions.
The issue's target, fused SS2D >= 1.5x faster than unfused on an H100, is
printed next to the measurement, never asserted.

    python benchmarks/bench_fused.py                      # GPU: triton backend
    python benchmarks/bench_fused.py --device cpu --quick # CPU: torch backend
    python benchmarks/bench_fused.py --cases 'ss2d vmamba-t s[12] 1280x800,bidir vim-s 1248' --json f.json
"""
import argparse
import fnmatch
import json
import math
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from bench_selective_scan import Timer, header_info, md_table  # noqa: E402

from mmvisbackbones.ops import (bidirectional_scan, cross_merge, cross_scan,  # noqa: E402
                                selective_scan, ss2d_scan)

TARGET_SS2D_SPEEDUP = 1.5
VMAMBA = {'t': ([96, 192, 384, 768], 1.0), 's': ([96, 192, 384, 768], 2.0),
          'b': ([128, 256, 512, 1024], 2.0)}


def ss2d_cases(quick):
    imgs = [(256, 256)] if quick else [(512, 512), (1280, 800)]
    archs = ['t'] if quick else ['t', 's', 'b']
    stages = [2, 3] if quick else [0, 1, 2, 3]
    if quick:  # a seconds-long case for dry runs (tools/dev/gpu_suite.py)
        yield 'ss2d vmamba-t s4 64x64', dict(P=768, H=2, W=2)
    for a in archs:
        dims, ratio = VMAMBA[a]
        for w, h in imgs:
            for s in stages:
                H, W = math.ceil(h / 4 / 2**s), math.ceil(w / 4 / 2**s)
                yield f'ss2d vmamba-{a} s{s + 1} {w}x{h}', dict(P=int(dims[s] * ratio), H=H, W=W)


def vim_cases(quick):
    for img in ([64, 224] if quick else [224, 1248]):
        yield f'bidir vim-s {img}', dict(P=768, L=(img // 16)**2 + 1)


def select(todo, patterns):
    """The entries of ``todo`` (``name`` first) whose name matches one of the
    comma-separated globs in ``patterns`` (all when ``patterns`` is empty)."""
    if not patterns:
        return todo
    pats = [p.strip() for p in patterns.split(',') if p.strip()]
    for pat in pats:
        if not any(fnmatch.fnmatchcase(t[0], pat) for t in todo):
            raise SystemExit(f'bench_fused: no case matches {pat!r}; cases are '
                             f'{[t[0] for t in todo]}')
    return [t for t in todo if any(fnmatch.fnmatchcase(t[0], p) for p in pats)]


def ss2d_inputs(P, H, W, dtype, device, batch=2, N=1):
    g = lambda *s: torch.randn(*s, device=device).to(dtype).requires_grad_(True)  # noqa
    return dict(x=g(batch, P, H, W), delta=g(batch, 4 * P, H, W),
                A=(-torch.rand(4 * P, N, device=device) - 0.5).requires_grad_(True),
                B=g(batch, 4, N, H, W), C=g(batch, 4, N, H, W),
                D=torch.ones(4 * P, device=device, requires_grad=True),
                delta_bias=torch.zeros(4 * P, device=device, requires_grad=True))


def ss2d_fused(ins, backend):
    return ss2d_scan(**ins, backend=backend)


def ss2d_unfused(ins, backend):
    # upstream's order: cross-scan copy of x, four sequence scans, merge
    x = ins['x']
    Bt, P, H, W = x.shape
    xs = cross_scan(x).reshape(Bt, 4 * P, H * W)
    ys = selective_scan(xs, ins['delta'].reshape(Bt, 4 * P, H * W), ins['A'],
                        ins['B'].reshape(Bt, 4, -1, H * W), ins['C'].reshape(Bt, 4, -1, H * W),
                        D=ins['D'], delta_bias=ins['delta_bias'], delta_softplus=True,
                        out_fp32=True, backend=backend)
    return cross_merge(ys.view(Bt, 4, P, H, W))


def bidir_inputs(P, L, dtype, device, batch=2, N=16):
    g = lambda *s: torch.randn(*s, device=device).to(dtype).requires_grad_(True)  # noqa
    return dict(u=g(batch, 2 * P, L), delta=g(batch, 2 * P, L),
                A=(-torch.rand(2 * P, N, device=device) - 0.5).requires_grad_(True),
                B=g(batch, 2, N, L), C=g(batch, 2, N, L), z=g(batch, P, L),
                D=torch.ones(2 * P, device=device, requires_grad=True),
                delta_bias=torch.zeros(2 * P, device=device, requires_grad=True))


def bidir_fused(ins, backend):
    return bidirectional_scan(**ins, backend=backend)


def bidir_unfused(ins, backend):
    P = ins['u'].shape[1] // 2
    f = lambda t: t.flip(-1)  # noqa: E731
    y0 = selective_scan(ins['u'][:, :P], ins['delta'][:, :P], ins['A'][:P], ins['B'][:, 0],
                        ins['C'][:, 0], D=ins['D'][:P], z=ins['z'],
                        delta_bias=ins['delta_bias'][:P], delta_softplus=True, backend=backend)
    y1 = selective_scan(f(ins['u'][:, P:]), f(ins['delta'][:, P:]), ins['A'][P:],
                        f(ins['B'][:, 1]), f(ins['C'][:, 1]), D=ins['D'][P:], z=f(ins['z']),
                        delta_bias=ins['delta_bias'][P:], delta_softplus=True, backend=backend)
    return y0 + f(y1)


def measure(fn, ins, timer, device):
    fwd = timer(lambda: fn(ins))[0]

    def fb():
        y = fn(ins)
        y.float().sum().backward()
    fb_ms = timer(fb)[0]
    peak = None
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fb()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return fwd, fb_ms, peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', choices=['fp32', 'fp16', 'bf16'], default=None)
    p.add_argument('--backend', default=None,
                   help='scan backend (default: triton on cuda, torch on cpu)')
    p.add_argument('--quick', action='store_true', help='small subset (CPU)')
    p.add_argument('--cases', help='comma-separated case names or globs (quoted: names '
                   "have spaces), e.g. 'ss2d vmamba-t s1 *,bidir vim-s 1248'")
    p.add_argument('--json', metavar='OUT', help='also write the results as JSON '
                   '(rewritten after every case)')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--max-seconds', type=float, default=5.0)
    p.add_argument('--dtype-default', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    args.dtype = args.dtype or ('bf16' if device.type == 'cuda' else 'fp32')
    dtype = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[args.dtype]
    backend = args.backend or ('triton' if device.type == 'cuda' else 'torch')
    timer = Timer(device, args.warmup, args.iters, args.max_seconds, flush_l2=True)
    info = header_info(args, device)
    print('\n'.join(f'- {k}: {v}' for k, v in info.items()))
    print(f'- scan backend: {backend}\n')
    rows = []
    doc = {'header': dict(info, backend=backend), 'target_ss2d_speedup': TARGET_SS2D_SPEEDUP,
           'results': []}
    # inputs are made one case at a time: the 1280x800 ones are large
    todo = [(n, c, ss2d_inputs, ss2d_fused, ss2d_unfused) for n, c in ss2d_cases(args.quick)]
    todo += [(n, c, bidir_inputs, bidir_fused, bidir_unfused) for n, c in vim_cases(args.quick)]
    todo = select(todo, args.cases)
    for name, cfg, make, fused, unfused in todo:
        print(f'[bench_fused] {name}', file=sys.stderr, flush=True)
        res = {'case': name, 'shape': cfg}
        try:
            ins = make(**cfg, dtype=dtype, device=device)
            ff, ffb, fmem = measure(lambda i: fused(i, backend), ins, timer, device)
            uf, ufb, umem = measure(lambda i: unfused(i, backend), ins, timer, device)
        except Exception as e:  # noqa: BLE001 - report, keep going
            res['error'] = f'{type(e).__name__}: {str(e)[:200]}'
            rows.append([name, f'failed: {type(e).__name__}: {str(e)[:80]}'] + [''] * 7)
        else:
            res.update(fused_fwd_ms=ff, unfused_fwd_ms=uf, fused_fwd_bwd_ms=ffb,
                       unfused_fwd_bwd_ms=ufb, speedup_fwd=uf / ff, speedup_fwd_bwd=ufb / ffb,
                       fused_fb_over_f=ffb / ff, fused_peak_mib=fmem, unfused_peak_mib=umem)
            mem = (f'{fmem:.0f} / {umem:.0f}' if fmem is not None else 'n/a (CPU)')
            rows.append([name, f'{ff:.3f}', f'{uf:.3f}', f'{uf / ff:.2f}', f'{ffb:.3f}',
                         f'{ufb:.3f}', f'{ufb / ffb:.2f}', f'{ffb / ff:.2f}', mem])
        ins = None
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        doc['results'].append(res)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(doc, f, indent=1)
    print(md_table(['case', 'fused fwd ms', 'unfused fwd ms', 'speed-up fwd', 'fused f+b ms',
                    'unfused f+b ms', 'speed-up f+b', 'fused (f+b)/f',
                    'peak MiB fused / unfused'], rows))
    print(f'\nTarget (H100, triton): fused SS2D >= {TARGET_SS2D_SPEEDUP}x faster than unfused; '
          'information only, not asserted.')
    if device.type != 'cuda':
        print('CPU run: the torch backend on both sides; not representative of the GPU.')


if __name__ == '__main__':
    main()
