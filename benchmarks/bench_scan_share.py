#!/usr/bin/env python
"""How much of a VMamba forward on the CPU is the SS2D scan, for the two
torch paths side by side in one process:

* ``composed``: cross-scan -> chunked selective scan -> cross-merge (what a
  traced / exported graph records);
* ``spatial``: the eager path, which scans the map's own rows and columns
  (``mmvisbackbones/ops/ss2d/torch_ss2d.py``).

The scan's time is the wall time inside ``ss2d_scan`` (softplus of the step
sizes, decays, the recurrences, the merge), summed over the blocks of one
forward; the share is that over the whole forward.  Rounds alternate the
paths; medians of ``--rounds``.  Outputs of the two paths are compared first.
``--split`` also times each path's ops by kind with torch.profiler (one
forward each).

    python benchmarks/bench_scan_share.py                    # VMamba-T, 512x512, 2 threads
    python benchmarks/bench_scan_share.py --threads 1 --size 800 1280
    python benchmarks/bench_scan_share.py --train --size 256 --batch 2
"""
import argparse
import contextlib
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import mmvisbackbones.backbones.vmamba as vmamba  # noqa: E402
import mmvisbackbones.ops.ss2d as ss2d  # noqa: E402
from mmvisbackbones import BACKBONES  # noqa: E402

PATHS = {'composed': ss2d._ss2d_composed, 'spatial': ss2d._ss2d_torch}


class ScanClock:
    """Wraps the ``ss2d_scan`` VMamba calls: picks the torch path and sums
    the wall time spent inside."""

    def __init__(self):
        self.seconds, self.path = 0.0, 'spatial'
        self._scan = vmamba.ss2d_scan

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        with self.use(self.path):
            out = self._scan(*args, **kwargs, backend='torch')
        self.seconds += time.perf_counter() - start
        return out

    @staticmethod
    @contextlib.contextmanager
    def use(path):
        saved = ss2d._BACKENDS['torch']
        ss2d._BACKENDS['torch'] = PATHS[path]
        try:
            yield
        finally:
            ss2d._BACKENDS['torch'] = saved


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='tiny')
    p.add_argument('--size', type=int, nargs='+', default=[512], help='H [W]')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--split', action='store_true', help='profile the ops of each path')
    p.add_argument('--train', action='store_true',
                   help='time a training step (train mode, forward + backward) instead')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    H, W = (args.size * 2)[:2]
    torch.manual_seed(0)
    model = BACKBONES['VMamba'](arch=args.arch, drop_path_rate=0.0).train(args.train)
    x = torch.randn(args.batch, 3, H, W)
    clock = ScanClock()
    vmamba.ss2d_scan = clock

    weights = None

    def run():
        nonlocal weights
        if not args.train:
            with torch.no_grad():
                return model(x)
        model.zero_grad(set_to_none=True)
        outs = model(x)
        if weights is None:  # a fixed random projection (the mean of a LayerNorm
            g = torch.Generator().manual_seed(1)  # output has no gradient to speak of)
            weights = [torch.randn(o.shape, generator=g) for o in outs]
        sum((o.float() * w).sum() for o, w in zip(outs, weights)).backward()
        return [p.grad.clone() for p in model.parameters()]

    times = {k: [] for k in PATHS}
    outs = {}
    for path in PATHS:  # warm-up, and the two paths must agree (outputs / gradients)
        clock.path = path
        outs[path] = run()
    for a, b in zip(*outs.values()):
        err = (a - b).abs().max().item() / max(a.abs().max().item(), 1e-30)
        if err > 1e-3:
            raise SystemExit(f'paths disagree: max rel difference {err:.2e}')
    for r in range(args.rounds):
        for path in (PATHS if r % 2 == 0 else list(PATHS)[::-1]):
            clock.path, clock.seconds = path, 0.0
            start = time.perf_counter()
            run()
            times[path].append((time.perf_counter() - start, clock.seconds))
    case = 'training step (forward + backward)' if args.train else 'eval forward'
    print(f'VMamba-{args.arch} {case} {args.batch}x3x{H}x{W}, {args.threads} thread(s), '
          f'median of {args.rounds}; torch {torch.__version__}\n')
    if args.train:
        print('(scan ms: the forward scans only; their backward runs in autograd)\n')
    print('| path | step ms | scan ms | scan share |' if args.train else
          '| path | forward ms | scan ms | scan share |')
    print('|---|---|---|---|')
    med = {}
    for path, ts in times.items():
        total = statistics.median(t for t, _ in ts)
        scan = statistics.median(s for _, s in ts)
        med[path] = scan
        shares = ', '.join(f'{s / t:.1%}' for t, s in ts)
        print(f'| {path} | {total * 1e3:.0f} | {scan * 1e3:.0f} | '
              f'{statistics.median(s / t for t, s in ts):.1%} (rounds: {shares}) |')
    print(f'\nscan composed / spatial: {med["composed"] / med["spatial"]:.2f}')
    if args.split:
        from torch.profiler import ProfilerActivity, profile
        for path in PATHS:
            clock.path = path
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            print(f'\n### ops of one forward, {path} path\n')
            print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))


if __name__ == '__main__':
    main()
