#!/usr/bin/env python
"""Long mixed-precision training of the demo detector, every backbone family:
bf16 autocast (``AutocastOptimWrapper``) against fp32 from the same initial
weights and the same data order, for a few hundred iterations.

Upstream reports NaNs exactly here (VMamba #138, Vim #30, Vision-RWKV #30).
For each family and precision it records the loss of every iteration,
whether every loss and every parameter stayed finite, and compares the
smoothed loss curves: ``band`` = max over iterations of |bf16 - fp32| /
fp32 of the running means (window ``--window``).  Results go to a JSON file
and a markdown table (BENCHMARKS.md quotes it).

    python tools/dev/mixed_precision_run.py --iters 300 --out mp.json
    python tools/dev/mixed_precision_run.py --families VMamba,Vim --iters 50 --dtypes fp32,bf16,fp16

The Mask R-CNN demo config (configs/demo/) with each family's tiny test arch
on generated COCO-format data (made in a temporary folder unless --data
names one); AdamW at the demo's learning rate; CPU or GPU.  Slow on a CPU
(about 1 s per bf16 iteration on 2 cores): it is a script, not a test;
tests/test_mixed_precision.py keeps a short version.
"""
import argparse
import json
import math
import os.path as osp
import sys
import tempfile
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tests'))

DTYPES = {'fp32': None, 'bf16': 'bfloat16', 'fp16': 'float16'}


def build(family, data_root, dtype, lr):
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner
    from mm_helpers import build_in_scope, demo_cfg
    import mmvisbackbones  # noqa: F401 - registers AutocastOptimWrapper
    cfg = demo_cfg('maskrcnn', data_root, backbone=family)
    torch.manual_seed(0)  # the same initial weights for every precision
    model = build_in_scope(cfg, 'maskrcnn')
    model.init_weights()
    optim = dict(type='AdamW', lr=lr, weight_decay=0.05)
    wrapper = (dict(type='OptimWrapper', optimizer=optim, clip_grad=dict(max_norm=35))
               if dtype is None else
               dict(type='AutocastOptimWrapper', dtype=dtype, optimizer=optim,
                    clip_grad=dict(max_norm=35)))
    ow = build_optim_wrapper(model, wrapper)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True, seed=0)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    return model, ow, loader


def train(family, data_root, tag, iters, lr, log_every):
    import random

    import numpy as np
    random.seed(0)
    np.random.seed(0)  # the pipeline's random flips: the same data for every precision
    torch.manual_seed(0)
    model, ow, loader = build(family, data_root, DTYPES[tag], lr)
    model.train()
    losses, first_bad, t0 = [], None, time.time()
    from mm_helpers import batches
    for i, batch in enumerate(batches(loader, iters)):
        log = model.train_step(batch, ow)
        loss = float(log['loss'].detach()) if torch.is_tensor(log['loss']) else float(log['loss'])
        losses.append(loss)
        params_ok = all(torch.isfinite(p).all() for p in model.parameters())
        if first_bad is None and (not math.isfinite(loss) or not params_ok):
            first_bad = {'iter': i, 'loss': loss, 'params_finite': params_ok}
            break
        if log_every and (i + 1) % log_every == 0:
            print(f'[mixed_precision] {family} {tag} {i + 1}/{iters} loss {loss:.4f} '
                  f'({time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
    return {'losses': losses, 'finite': first_bad is None, 'first_non_finite': first_bad,
            'seconds': round(time.time() - t0, 1)}


def running_mean(xs, w):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= w:
            acc -= xs[i - w]
        out.append(acc / min(i + 1, w))
    return out


def compare(ref, other, window):
    n = min(len(ref), len(other))
    a, b = running_mean(ref[:n], window), running_mean(other[:n], window)
    rel = [abs(y - x) / abs(x) for x, y in zip(a, b) if x]
    tail = max(1, n // 10)
    return {'band': max(rel) if rel else None,
            'band_after_warmup': max(rel[window:]) if len(rel) > window else None,
            'final_mean_ref': sum(ref[n - tail:n]) / tail,
            'final_mean': sum(other[n - tail:n]) / tail}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--families', help='comma-separated (default: every registered family)')
    p.add_argument('--dtypes', default='fp32,bf16', help='comma-separated of fp32,bf16,fp16 '
                   '(fp32 is the reference and always runs)')
    p.add_argument('--iters', type=int, default=300)
    p.add_argument('--lr', type=float, default=2e-4)
    p.add_argument('--window', type=int, default=20, help='running-mean window of the band')
    p.add_argument('--data', help='folder with coco/ (default: generated in a temp folder)')
    p.add_argument('--num-train', type=int, default=16, help='images of the generated data')
    p.add_argument('--out', required=True, help='JSON results (rewritten after every run)')
    p.add_argument('--log-every', type=int, default=50)
    args = p.parse_args(argv)
    from mmvisbackbones import BACKBONES
    from mmvisbackbones.datasets import make_coco_demo
    families = args.families.split(',') if args.families else sorted(BACKBONES)
    tags = ['fp32'] + [t for t in args.dtypes.split(',') if t != 'fp32']
    for t in tags:
        if t not in DTYPES:
            raise SystemExit(f'unknown dtype {t!r}; choose from {sorted(DTYPES)}')
    data = args.data
    if data is None:
        data = tempfile.mkdtemp(prefix='mmvb-mp-')
        make_coco_demo(osp.join(data, 'coco'), num_train=args.num_train, num_val=2)
    doc = {'iters': args.iters, 'lr': args.lr, 'window': args.window,
           'device': 'cuda' if torch.cuda.is_available() else 'cpu',
           'torch': torch.__version__, 'threads': torch.get_num_threads(), 'results': {}}
    for fam in families:
        runs = {}
        for tag in tags:
            runs[tag] = train(fam, data, tag, args.iters, args.lr, args.log_every)
            if tag != 'fp32':
                runs[tag].update(compare(runs['fp32']['losses'], runs[tag]['losses'],
                                         args.window))
            doc['results'][fam] = runs
            with open(args.out, 'w') as f:
                json.dump(doc, f, indent=1)
    rows = []
    for fam, runs in doc['results'].items():
        for tag in tags[1:]:
            r = runs[tag]
            band = r['band_after_warmup'] if r['band_after_warmup'] is not None else r['band']
            rows.append(f'| {fam} | {tag} | {len(r["losses"])} | '
                        f'{"yes" if r["finite"] else "NO"} | {r["final_mean_ref"]:.3f} | '
                        f'{r["final_mean"]:.3f} | {band:.3f} |')
    print(f'{args.iters} iterations, lr {args.lr}, running mean over {args.window}\n')
    print('| family | precision | iterations | all finite | fp32 final loss | final loss | '
          'band (max rel. diff of running means, after the first window) |')
    print('|---|---|---|---|---|---|---|')
    print('\n'.join(rows))
    return 0 if all(r[t]['finite'] for r in doc['results'].values() for t in tags) else 1


if __name__ == '__main__':
    sys.exit(main())
