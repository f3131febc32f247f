#!/usr/bin/env python
"""How much of a VMamba forward on the CPU is the SS2D scan, for the two
torch paths side by side in one process:

* ``composed``: cross-scan -> chunked selective scan -> cross-merge (what a
  traced / exported graph records);
* ``spatial``: the eager path, which scans the map's own rows and columns
  (``mmvisbackbones/ops/ss2d/torch_ss2d.py``);
* ``compiled`` (with ``--compiled``): the eager path's chunked scan as one
  ``torch.compile``'d graph (``mmvisbackbones/ops/ss2d/compiled_ss2d.py``,
  what ``MMVB_SS2D_COMPILE=1`` selects), channel axis innermost;
* ``associative`` (with ``--associative``): the four-direction scan written
  as ``torch._higher_order_ops.associative_scan`` of the linear recurrence
  (``(a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2)``, fp32, decays <= 1) under
  ``torch.compile(fullgraph=True)``, an earlier attempt kept for comparison.

The first call of a compiled path (the compile) is reported.

The scan's time is the wall time inside ``ss2d_scan`` (softplus of the step
sizes, decays, the recurrences, the merge), summed over the blocks of one
forward; the share is that over the whole forward.  Rounds alternate the
paths; medians of ``--rounds``.  Outputs of the two paths are compared first.
``--split`` also times each path's ops by kind with torch.profiler (one
forward each).

    python benchmarks/bench_scan_share.py                    # VMamba-T, 512x512, 2 threads
    python benchmarks/bench_scan_share.py --threads 1 --size 800 1280
    python benchmarks/bench_scan_share.py --train --size 256 --batch 2
    python benchmarks/bench_scan_share.py --compiled --only-compared
    python benchmarks/bench_scan_share.py --associative --only-compared
"""
import argparse
import contextlib
import os
import os.path as osp
import statistics
import sys
import time
from unittest import mock

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import mmvisbackbones.backbones.vmamba as vmamba  # noqa: E402
import mmvisbackbones.ops.ss2d as ss2d  # noqa: E402
from mmvisbackbones import BACKBONES  # noqa: E402
from mmvisbackbones.ops.ss2d import compiled_ss2d  # noqa: E402

PATHS = {'composed': ss2d._ss2d_composed, 'spatial': ss2d._ss2d_torch}


def ss2d_compiled(*args):
    """The spatial path with ``MMVB_SS2D_COMPILE=1`` (its compiled forward)."""
    with mock.patch.dict(os.environ, {compiled_ss2d.ENV_VAR: '1'}):
        return ss2d._ss2d_torch(*args)


def _linear_combine(x, y):
    """Composition of two steps of ``h -> a h + b`` (the earlier step first)."""
    a1, b1 = x
    a2, b2 = y
    return a1 * a2, a2 * b1 + b2


def ss2d_associative(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """The four-direction scan (directions as cross-scan: rows, columns, and
    both backwards) with each recurrence as an associative scan."""
    from torch._higher_order_ops.associative_scan import associative_scan
    Bt, P, H, W = x.shape
    N = A.shape[-1]
    x = x.float()
    dt = delta.float().view(Bt, 4, P, H, W)
    if delta_bias is not None:
        dt = dt + delta_bias.float().view(4, P, 1, 1)
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)
    A = A.float().view(4, P, N, 1)
    out = None
    for k in range(4):
        d, u, Bk, Ck = dt[:, k], x, B[:, k].float(), C[:, k].float()
        if k % 2:  # column-major directions
            d, u, Bk, Ck = (t.transpose(-1, -2) for t in (d, u, Bk, Ck))
        d, u = d.reshape(Bt, P, 1, -1), u.reshape(Bt, P, 1, -1)
        Bk, Ck = Bk.reshape(Bt, 1, N, -1), Ck.reshape(Bt, 1, N, -1)
        _, h = associative_scan(_linear_combine, (torch.exp(d * A[k]), d * u * Bk), dim=3,
                                reverse=k >= 2, combine_mode='generic')
        y = (h * Ck).sum(2)
        y = y.view(Bt, P, W, H).transpose(-1, -2) if k % 2 else y.view(Bt, P, H, W)
        out = y if out is None else out + y
    if D is not None:
        out = out + x * D.float().view(4, P).sum(0).view(1, P, 1, 1)
    return out


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
    p.add_argument('--compiled', action='store_true',
                   help='also time the compiled forward (MMVB_SS2D_COMPILE=1)')
    p.add_argument('--associative', action='store_true',
                   help='also time the torch.compile\'d associative-scan experiment')
    p.add_argument('--only-compared', action='store_true',
                   help='with --compiled / --associative: leave the composed path out')
    args = p.parse_args()
    if args.associative and args.train:
        p.error('--associative times the eval forward only')
    if args.compiled:
        PATHS['compiled'] = ss2d_compiled
    if args.associative:
        PATHS['associative'] = torch.compile(ss2d_associative, fullgraph=True, dynamic=False)
    if args.only_compared and (args.compiled or args.associative):
        PATHS.pop('composed')
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
    first_call = {}
    for path in PATHS:  # warm-up (the compile), and the paths must agree (outputs / gradients)
        clock.path = path
        start = time.perf_counter()
        outs[path] = run()
        first_call[path] = time.perf_counter() - start
    ref = next(iter(outs))
    for path in outs:
        for a, b in zip(outs[ref], outs[path]):
            err = (a - b).abs().max().item() / max(a.abs().max().item(), 1e-30)
            if err > 1e-3:
                raise SystemExit(f'paths {ref} and {path} disagree: max rel difference '
                                 f'{err:.2e}')
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
    for path in med:
        if path != 'spatial':
            print(f'\nscan {path} / spatial: {med[path] / med["spatial"]:.2f}')
    for path in ('compiled', 'associative'):
        if path in first_call:
            print(f'first call of the {path} path (compiles every stage\'s shapes): '
                  f'{first_call[path]:.1f} s')
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
