#!/usr/bin/env python
"""Ours vs mmdet's classes, same weights, side by side in one process:
``Swin(arch='tiny')`` against ``mmdet.models.backbones.SwinTransformer``
(Swin-T) and ``PVTv2(arch='b2')`` against ``PyramidVisionTransformerV2``
(b2).

Both sides of a pair get identical weights: mmdet's model is built (and
initialised with non-trivial values), its state dict goes through our
converter (``convert_swin_checkpoint`` / ``convert_pvtv2_checkpoint``) and is
loaded strictly into ours.  Before any timing the script asserts that the two
compute the same thing: the four eval outputs at each case's input, and, in
train mode with drop path switched off, the four outputs and the gradients of
the first and last layers after a backward (fp32 tolerances).  mmdet's
PVTv2 uses LayerNorm eps 1e-6 in its patch-embed and spatial-reduction norms
where upstream (and ours) use 1e-5; those two eps are set to upstream's on
the mmdet model (as tests/test_pvtv2.py does) so that outputs can match.

Drop path: both sides use the same ``drop_path_rate``, mmdet's detection
configs' value: 0.2 for Swin-T (``mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``,
also our ``tiny`` default) and 0.1 for PVTv2-b2 (``retinanet_pvtv2-b0_fpn``
base of the b2 config, and our ``b2`` default).  The train-mode cases run with
it on (as in training).

Cases (``--cases``):

* ``eval_fwd``: eval mode, ``torch.no_grad``, forward, 512x512, batch 1
  (``--eval-size``, ``--eval-batch``);
* ``train_fwd_bwd``: train mode, forward, loss = sum of the outputs' means,
  backward (grads set to None first), 256x256, batch 2 (``--train-size``,
  ``--train-batch``);
* ``train_fwd``: train mode, grad enabled, forward alone, same input.

Timing: per case, ``--warmup`` untimed calls of each side, then ``--rounds``
rounds, each timing one call of ours and one of mmdet's, the order swapped
every round (so that a noisy neighbour hits both); the table gives the median
of each side, ``mmdet / ours`` = median(mmdet) / median(ours) (> 1: ours is
faster), and the median over rounds of each round's mmdet / ours (the two calls
of a round run back to back, so this ratio is the least sensitive to load from
other processes on a shared machine).  ``--profile`` also prints a torch.profiler table (self CPU time) of
one call of each side per case.

    python benchmarks/bench_vs_mmdet.py                       # all models, all cases
    python benchmarks/bench_vs_mmdet.py --models swin --cases train_fwd --profile
    python benchmarks/bench_vs_mmdet.py --json out.json
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
import os.path as osp

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmvisbackbones import BACKBONES  # noqa: E402
from mmvisbackbones.backbones.pvtv2 import convert_pvtv2_checkpoint  # noqa: E402
from mmvisbackbones.backbones.swin import convert_swin_checkpoint  # noqa: E402

CASES = {
    # name: (mode, input size, batch)
    'eval_fwd': ('eval', 512, 1),
    'train_fwd_bwd': ('train_bwd', 256, 2),
    'train_fwd': ('train', 256, 2),
}
#: mmdet's detection configs' drop_path_rate, used for both sides
DROP_PATH = {'swin': 0.2, 'pvtv2': 0.1}
LABEL = {'swin': 'Swin-T', 'pvtv2': 'PVTv2-b2'}


def perturb_(model, seed):
    """Non-trivial values for every parameter (norm weights around 1, biases
    and bias tables not zero), so the output check is not degenerate."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ('norm' in name or name.endswith('ln.weight')) \
                    and name.endswith('weight'):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1 or 'relative_position_bias_table' in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model


def build_pair(model: str, drop_path_rate: float):
    """(ours, mmdet's) with identical weights."""
    torch.manual_seed(0)
    if model == 'swin':
        from mmdet.models.backbones import SwinTransformer
        peer = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                               window_size=7, mlp_ratio=4, qkv_bias=True, qk_scale=None,
                               drop_rate=0.0, attn_drop_rate=0.0,
                               drop_path_rate=drop_path_rate, patch_norm=True,
                               out_indices=(0, 1, 2, 3), with_cp=False)
        peer.init_weights()
        perturb_(peer, 1)
        ours = BACKBONES.get('Swin')(arch='tiny', drop_path_rate=drop_path_rate)
        ours.load_state_dict(convert_swin_checkpoint(peer.state_dict()), strict=True)
        first = ('patch_embed.proj.weight', 'patch_embed.projection.weight')
        last = ('stages.3.blocks.1.mlp.fc2.weight', 'stages.3.blocks.1.ffn.layers.1.weight')
    elif model == 'pvtv2':
        from mmdet.models.backbones import PyramidVisionTransformerV2
        peer = PyramidVisionTransformerV2(embed_dims=64, num_layers=[3, 4, 6, 3],
                                          num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4],
                                          sr_ratios=[8, 4, 2, 1], qkv_bias=True,
                                          drop_rate=0.0, attn_drop_rate=0.0,
                                          drop_path_rate=drop_path_rate,
                                          out_indices=(0, 1, 2, 3))
        peer.init_weights()
        perturb_(peer, 1)
        # upstream's eps (ours) in the patch-embed and spatial-reduction norms
        for layer in peer.layers:
            layer[0].norm.eps = 1e-5
            for blk in layer[1]:
                if hasattr(blk.attn, 'norm'):
                    blk.attn.norm.eps = 1e-5
        ours = BACKBONES.get('PVTv2')(arch='b2', drop_path_rate=drop_path_rate)
        ours.load_state_dict(convert_pvtv2_checkpoint(peer.state_dict()), strict=True)
        first = ('patch_embed.proj.weight', 'layers.0.0.projection.weight')
        last = ('stages.3.blocks.2.mlp.fc2.bias', 'layers.3.1.2.ffn.layers.4.bias')
    else:
        raise ValueError(model)
    return ours, peer, (first, last)


def _set_drop_path(net, on: bool):
    for m in net.modules():
        if type(m).__name__ == 'DropPath':
            if not hasattr(m, '_bench_p'):
                m._bench_p = m.drop_prob
            m.drop_prob = m._bench_p if on else 0.0


def check_same(ours, peer, grad_keys, cases, atol=1e-4, rtol=1e-4):
    """Assert equal outputs (eval, and train without drop path) and equal
    gradients of a first- and a last-layer weight; returns the worst abs
    output difference."""
    worst = 0.0
    sizes = sorted({(CASES[c][1], CASES[c][2]) for c in cases})
    for size, batch in sizes:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
        ours.eval()
        peer.eval()
        with torch.no_grad():
            a, b = ours(x), peer(x)
        assert len(a) == len(b) == 4
        for o, r in zip(a, b):
            assert o.shape == r.shape, (o.shape, r.shape)
            torch.testing.assert_close(o, r, atol=atol, rtol=rtol)
            worst = max(worst, (o - r).abs().max().item())
    # train mode, drop path off: same outputs and same gradients
    size, batch = min(sizes)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))
    grads = []
    for net in (ours, peer):
        net.train()
        _set_drop_path(net, False)
        net.zero_grad(set_to_none=True)
        outs = net(x)
        sum(o.mean() for o in outs).backward()
        params = dict(net.named_parameters())
        grads.append((outs, [params[k[0 if net is ours else 1]].grad for k in grad_keys]))
        _set_drop_path(net, True)
        net.zero_grad(set_to_none=True)
    for o, r in zip(grads[0][0], grads[1][0]):
        torch.testing.assert_close(o.detach(), r.detach(), atol=atol, rtol=rtol)
        worst = max(worst, (o - r).abs().max().item())
    for go, gp in zip(grads[0][1], grads[1][1]):
        assert go is not None and gp is not None
        torch.testing.assert_close(go, gp, atol=atol * go.abs().max().item(), rtol=1e-3)
    return worst


def make_call(net, case):
    mode, size, batch = CASES[case]
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    if mode == 'eval':
        def run():
            net.eval()
            with torch.no_grad():
                net(x)
    elif mode == 'train':
        def run():
            net.train()
            with torch.enable_grad():
                net(x)
    else:
        def run():
            net.train()
            net.zero_grad(set_to_none=True)
            outs = net(x)
            sum(o.mean() for o in outs).backward()
    return run


def time_pair(calls, warmup, rounds):
    """Interleaved timing: {side: [ms per round]}; order swapped each round."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {k: [] for k in calls}
    names = list(calls)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            calls[k]()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def profile_table(fn, row_limit):
    from torch.profiler import ProfilerActivity, profile
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=row_limit)


def md_table(headers, rows):
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=['swin', 'pvtv2'], choices=list(DROP_PATH))
    p.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    p.add_argument('--eval-size', type=int, default=512)
    p.add_argument('--eval-batch', type=int, default=1)
    p.add_argument('--train-size', type=int, default=256)
    p.add_argument('--train-batch', type=int, default=2)
    p.add_argument('--rounds', type=int, default=7, help='timed rounds (median of these)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    p.add_argument('--profile', action='store_true',
                   help='print a torch.profiler table of one call of each side per case')
    p.add_argument('--profile-rows', type=int, default=15)
    p.add_argument('--no-check', action='store_true', help='skip the output/grad check')
    p.add_argument('--json', help='also write the results to this file')
    args = p.parse_args(argv)
    CASES['eval_fwd'] = ('eval', args.eval_size, args.eval_batch)
    for c in ('train_fwd_bwd', 'train_fwd'):
        CASES[c] = (CASES[c][0], args.train_size, args.train_batch)
    torch.set_num_threads(args.threads)
    import mmdet
    info = {
        'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        'device': f'CPU: {platform.processor() or platform.machine()}, '
                  f'{os.cpu_count()} cores',
        'torch': torch.__version__, 'mmdet': mmdet.__version__,
        'torch_threads': torch.get_num_threads(), 'dtype': 'fp32',
        'drop_path_rate': {LABEL[m]: DROP_PATH[m] for m in args.models},
        'cases': {c: dict(zip(('mode', 'size', 'batch'), CASES[c])) for c in args.cases},
        'rounds': args.rounds, 'warmup': args.warmup,
        'command': ' '.join(shlex.quote(a) for a in ['python'] + sys.argv),
    }
    print('\n'.join(f'- {k}: {v}' for k, v in info.items()) + '\n', flush=True)
    results = []
    for model in args.models:
        ours, peer, grad_keys = build_pair(model, DROP_PATH[model])
        if not args.no_check:
            worst = check_same(ours, peer, grad_keys, args.cases)
            print(f'[check] {LABEL[model]}: outputs and grads match mmdet\'s '
                  f'(max |diff| {worst:.1e})', flush=True)
        for case in args.cases:
            calls = {'ours': make_call(ours, case), 'mmdet': make_call(peer, case)}
            if args.profile:
                for side, fn in calls.items():
                    print(f'\n### profile: {LABEL[model]} {case}, {side}\n', flush=True)
                    print(profile_table(fn, args.profile_rows), flush=True)
            t = time_pair(calls, args.warmup, args.rounds)
            mo, mp = statistics.median(t['ours']), statistics.median(t['mmdet'])
            per_round = statistics.median(b / a for a, b in zip(t['ours'], t['mmdet']))
            r = dict(model=LABEL[model], case=case, mode=CASES[case][0], size=CASES[case][1],
                     batch=CASES[case][2], ours_ms=mo, mmdet_ms=mp, peer_over_ours=mp / mo,
                     per_round_ratio=per_round,
                     ours_all_ms=t['ours'], mmdet_all_ms=t['mmdet'])
            results.append(r)
            print(f'[bench_vs_mmdet] {LABEL[model]} {case}: ours {mo:.1f} ms, mmdet {mp:.1f} ms, '
                  f'mmdet/ours {mp / mo:.2f}', file=sys.stderr, flush=True)
        ours.zero_grad(set_to_none=True)
        peer.zero_grad(set_to_none=True)
        del ours, peer
    rows = [[r['model'], r['case'], f"{r['size']}x{r['size']}", r['batch'],
             f"{r['ours_ms']:.1f}", f"{r['mmdet_ms']:.1f}", f"{r['peer_over_ours']:.2f}",
             f"{r['per_round_ratio']:.2f}"]
            for r in results]
    print('\n' + md_table(['model', 'case', 'input', 'batch', f'ours ms (median of {args.rounds})',
                           'mmdet ms', 'mmdet / ours', 'median of per-round mmdet / ours'],
                          rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(info=info, results=results), f, indent=1)
    return results


if __name__ == '__main__':
    main()
