#!/usr/bin/env python
"""Training step and inference throughput of whole backbones, side by side in
one process: VMamba-T against Swin-T (upstream VMamba's comparison), with
MLLA-T, BiFormer-T and Vim-S, at a detection input (800x1280, batch 2).

* training step: ``zero_grad``, forward in train mode, the mean of every
  output summed as the loss, backward, one AdamW step;
* inference: forward in eval mode under ``torch.inference_mode``;

both under bf16 autocast on CUDA (fp32 on the CPU).  Prints per model the
median time of each, images/s, the peak memory of each (CUDA) and the ratio
to the anchor (the first model, Swin-T) measured in the same run; ``--json``
writes the same.  Upstream VMamba reports VMamba-T / Swin-T = 0.58x training
and 1.36x inference throughput on an A100 (224x224 classification); those are
printed as information, never asserted.

    python benchmarks/bench_train_infer.py                      # GPU
    python benchmarks/bench_train_infer.py --device cpu --arch test --size 64x96 --iters 1
"""
import argparse
import json
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from bench_backbones import add_run_args, start  # noqa: E402
from bench_hierarchical import MODELS as HIERARCHICAL, parse_size  # noqa: E402
from bench_selective_scan import md_table  # noqa: E402

from mmvisbackbones import BACKBONES  # noqa: E402

#: label -> (registered class, kwargs); the first is the anchor of the ratios
MODELS = {
    'Swin-T': HIERARCHICAL['Swin-T'],
    'VMamba-T': HIERARCHICAL['VMamba-T'],
    'MLLA-T': HIERARCHICAL['MLLA-T'],
    'BiFormer-T': HIERARCHICAL['BiFormer-T (n_win 16)'],  # its detection setting
    'Vim-S': ('Vim', dict(arch='small')),
}
#: upstream VMamba's throughput ratios VMamba-T / Swin-T (A100, 224x224)
UPSTREAM_RATIO = {'train': 0.58, 'infer': 1.36}


def build(label: str, arch: str = None):
    cls_name, kw = MODELS[label]
    kw = dict(kw)
    if arch:  # e.g. 'test' for dry runs: every model at its tiny arch
        kw['arch'] = arch
    return BACKBONES.get(cls_name)(**kw)


def train_step(net, opt, x, autocast):
    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            outs = net(x)
        sum(o.float().mean() for o in outs).backward()
        opt.step()
    return run


def infer_step(net, x, autocast):
    def run():
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16,
                                                    enabled=autocast):
            net(x)
    return run


def peak_mib(device, fn):
    """Peak allocated memory of one call of ``fn`` above what was allocated
    before it, MiB (CUDA), else None."""
    if device.type != 'cuda':
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=parse_size, default=(800, 1280), help='input HxW')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--arch', help="override every model's arch (e.g. 'test' for a dry run)")
    p.add_argument('--json', metavar='OUT', help='also write the results as JSON '
                   '(rewritten after every model)')
    add_run_args(p)
    p.set_defaults(batch=2)
    args = p.parse_args(argv)
    device, timer = start(args)
    autocast = device.type == 'cuda'
    H, W = args.size
    doc = {'size': [H, W], 'batch': args.batch, 'arch_override': args.arch,
           'precision': args.dtype, 'upstream_ratio_vmamba_t_over_swin_t': UPSTREAM_RATIO,
           'results': []}
    rows = []
    anchor = None
    for label in args.models:
        res = {'model': label}
        net = opt = None
        try:
            torch.manual_seed(0)
            net = build(label, args.arch).to(device)
            res['params_m'] = sum(p.numel() for p in net.parameters()) / 1e6
            x = torch.randn(args.batch, 3, H, W, device=device)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
            net.train()
            tr = train_step(net, opt, x, autocast)
            res['train_ms'] = timer(tr)[0]
            res['train_peak_mib'] = peak_mib(device, tr)
            net.eval()
            inf = infer_step(net, x, autocast)
            res['infer_ms'] = timer(inf)[0]
            res['infer_peak_mib'] = peak_mib(device, inf)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: report, keep going
            res['error'] = f'{type(e).__name__}: {str(e)[:200]}'
        del net, opt
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        if 'error' not in res:
            res['train_img_s'] = args.batch * 1e3 / res['train_ms']
            res['infer_img_s'] = args.batch * 1e3 / res['infer_ms']
            anchor = anchor or res
            res['train_throughput_vs_anchor'] = res['train_img_s'] / anchor['train_img_s']
            res['infer_throughput_vs_anchor'] = res['infer_img_s'] / anchor['infer_img_s']
            print(f'[bench_train_infer] {label}: train {res["train_ms"]:.1f} ms, '
                  f'infer {res["infer_ms"]:.1f} ms', file=sys.stderr, flush=True)
        else:
            print(f'[bench_train_infer] {label}: {res["error"]}', file=sys.stderr, flush=True)
        doc['anchor'] = anchor and anchor['model']
        doc['results'].append(res)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(doc, f, indent=1)

    def mem(v):
        return '-' if v is None else f'{v:.0f}'
    for r in doc['results']:
        if 'error' in r:
            rows.append([r['model'], f'failed: {r["error"][:80]}'] + [''] * 7)
            continue
        rows.append([r['model'], f'{r["params_m"]:.1f}', f'{r["train_ms"]:.1f}',
                     f'{r["train_img_s"]:.2f}', f'{r["train_throughput_vs_anchor"]:.2f}',
                     mem(r['train_peak_mib']), f'{r["infer_ms"]:.1f}', f'{r["infer_img_s"]:.2f}',
                     f'{r["infer_throughput_vs_anchor"]:.2f}', mem(r['infer_peak_mib'])])
    a = doc.get('anchor') or args.models[0]
    print(f'input {H}x{W}, batch {args.batch}, {args.dtype}\n')
    print(md_table(['model', 'params M', 'train step ms', 'train img/s', f'train vs {a}',
                    'train peak MiB', 'infer ms', 'infer img/s', f'infer vs {a}',
                    'infer peak MiB'], rows))
    print(f'\nUpstream VMamba (A100, 224x224 classification): VMamba-T / Swin-T throughput '
          f'{UPSTREAM_RATIO["train"]}x training, {UPSTREAM_RATIO["infer"]}x inference; '
          'information only, not asserted.')
    return 0 if all('error' not in r for r in doc['results']) else 1


if __name__ == '__main__':
    sys.exit(main())
