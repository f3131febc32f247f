#!/usr/bin/env python
"""Memory and time of BiFormer's routed attention: upstream's straightforward
gather against our chunked / online-softmax path, side by side in one run.

    python benchmarks/bench_biformer_memory.py                  # GPU if available
    python benchmarks/bench_biformer_memory.py --device cpu     # CPU, fresh process per measurement
    python benchmarks/bench_biformer_memory.py --help

Cases (detection setting, n_win 16, a 1280x800 input, batch ``--batch``):

* ``op_s{1,2,3}``: the routed attention op alone with the shapes it has in
  BiFormer-T/S stage 1/2/3 (T and S share dims 64/128/256, head_dim 32,
  topk 1/4/16; the maps are padded to a multiple of 16: 200x320 -> 208x320,
  100x160 -> 112x160, 50x80 -> 64x80);
* ``bra_s3``: one whole BRA module of stage 3 (qkv, routing, LePE, proj);
* ``backbone_t`` / ``backbone_s``: the whole BiFormer-T / -S backbone
  (the four outputs; stage 4 is global attention, identical in both variants).

Variants (op cases; the module/backbone cases run ``gather`` and ``chunked``):

* ``gather``: upstream's formulation (:func:`routed_attention_reference`:
  ``torch.gather`` on the (B, R, R, ...) broadcast of k/v, whose backward
  also materialises a gradient of that R-fold broadcast shape);
* ``index-gather``: the same K-fold copy made by advanced indexing
  ``k.view(B*R, ...)[idx]`` (backward: index_add, no R-fold gradient) -- the
  straightforward gather done as well as plain autograd can;
* ``chunked``: ours (:func:`routed_attention`), ``--chunks`` routed regions per
  step (default 1 and 4).

Measured per case and variant, forward + backward (``sum(out**2)``):

* ``saved MiB``: bytes autograd keeps for the backward after the forward
  (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once),
  exact and device-independent;
* ``peak MiB``: on CUDA ``torch.cuda.max_memory_allocated()`` during one
  forward+backward minus what was allocated before; on CPU the increase of the
  process's peak RSS (``resource.getrusage(...).ru_maxrss``) over one
  forward+backward, each (case, variant) in a fresh subprocess so that one
  measurement's peak cannot hide another's;
* ``fwd+bwd ms``: median over ``--iters`` timed calls after one warm-up.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmvisbackbones.backbones.biformer import BiFormer, BiLevelRoutingAttention  # noqa: E402
from mmvisbackbones.ops.routed_attention import (routed_attention,  # noqa: E402
                                                 routed_attention_reference)

H_IMG, W_IMG, N_WIN = 800, 1280, 16
#: stage -> (dim, topk, map H, map W) of BiFormer-T/S at 1280x800
STAGES = {1: (64, 1, 200, 320), 2: (128, 4, 100, 160), 3: (256, 16, 50, 80)}
HEAD_DIM = 32


def ceil_to(n, m):
    return -(-n // m) * m


def op_shapes(stage, batch):
    dim, topk, h, w = STAGES[stage]
    hp, wp = ceil_to(h, N_WIN), ceil_to(w, N_WIN)
    T = (hp // N_WIN) * (wp // N_WIN)
    return dict(B=batch, R=N_WIN * N_WIN, h=dim // HEAD_DIM, T=T, d=HEAD_DIM, K=topk,
                map=f'{h}x{w}->{hp}x{wp}')


def index_gather_attention(q, k, v, r_idx, scale):
    """The straightforward gather by advanced indexing (a K-fold copy of k/v,
    the attention matrix kept for the backward, no R-fold gradient)."""
    B, R, h, T, d = q.shape
    K = r_idx.shape[-1]
    flat = r_idx + torch.arange(B, device=r_idx.device).view(B, 1, 1) * R
    k_sel = k.reshape(B * R, h, T, d)[flat].transpose(2, 3).reshape(B, R, h, K * T, d)
    v_sel = v.reshape(B * R, h, T, -1)[flat].transpose(2, 3).reshape(B, R, h, K * T, -1)
    attn = ((q * scale) @ k_sel.transpose(-1, -2)).softmax(dim=-1)
    return attn @ v_sel


def describe(case, batch):
    if case.startswith('op_s'):
        s = op_shapes(int(case[-1]), batch)
        return (f"q,k,v ({s['B']}, R={s['R']}, h={s['h']}, T={s['T']}, d={s['d']}), "
                f"topk={s['K']}, map {s['map']}")
    if case == 'bra_s3':
        dim, topk, h, w = STAGES[3]
        return f'x ({batch}, {h}, {w}, {dim}) NHWC, n_win {N_WIN}, topk {topk}'
    arch = {'backbone_t': 'tiny', 'backbone_s': 'small'}[case]
    return f'BiFormer-{arch[0].upper()} input ({batch}, 3, {H_IMG}, {W_IMG}), n_win {N_WIN}'


def build(case, variant, chunk, batch, device, dtype):
    """-> (fn, inputs): fn(*inputs) returns a tensor or a tuple of tensors."""
    g = torch.Generator(device='cpu').manual_seed(0)
    if case.startswith('op_s'):
        s = op_shapes(int(case[-1]), batch)
        shp = (s['B'], s['R'], s['h'], s['T'], s['d'])
        q, k, v = (torch.randn(shp, generator=g).to(device, dtype).requires_grad_(True)
                   for _ in range(3))
        idx = torch.stack([torch.stack([torch.randperm(s['R'], generator=g)[:s['K']]
                                        for _ in range(s['R'])]) for _ in range(s['B'])])
        idx = idx.to(device)
        scale = (s['h'] * s['d'])**-0.5
        if variant == 'gather':
            return (lambda q, k, v: routed_attention_reference(q, k, v, idx, scale)), (q, k, v)
        if variant == 'index-gather':
            return (lambda q, k, v: index_gather_attention(q, k, v, idx, scale)), (q, k, v)
        return (lambda q, k, v: routed_attention(q, k, v, idx, scale, chunk)), (q, k, v)
    impl = 'gather' if variant == 'gather' else 'chunked'
    torch.manual_seed(0)
    if case == 'bra_s3':
        dim, topk, h, w = STAGES[3]
        mod = BiLevelRoutingAttention(dim, dim // HEAD_DIM, N_WIN, topk, routed_impl=impl,
                                      routed_chunk=chunk).to(device, dtype)
        x = torch.randn(batch, h, w, dim, generator=g).to(device, dtype).requires_grad_(True)
        return mod, (x, )
    arch = {'backbone_t': 'tiny', 'backbone_s': 'small'}[case]
    net = BiFormer(arch=arch, n_win=N_WIN, drop_path_rate=0.0, routed_impl=impl,
                   routed_chunk=chunk).to(device, dtype).train()
    x = torch.randn(batch, 3, H_IMG, W_IMG, generator=g).to(device, dtype)
    return net, (x, )


def loss_of(out):
    outs = out if isinstance(out, (tuple, list)) else (out, )
    return sum(o.float().square().mean() for o in outs)


def saved_bytes(fn, inputs):
    seen = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[(st.data_ptr(), t.device)] = st.nbytes()
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    # inputs and parameters are alive anyway; count only what the forward added
    own = {(t.untyped_storage().data_ptr(), t.device) for t in inputs}
    if isinstance(fn, torch.nn.Module):
        own |= {(p.untyped_storage().data_ptr(), p.device) for p in fn.parameters()}
    total = sum(b for key, b in seen.items() if key not in own)
    del out
    return total


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def peak_rss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if platform.system() == 'Darwin' else r * 1024


def fwd_bwd(fn, inputs):
    loss_of(fn(*inputs)).backward()
    for t in inputs:
        t.grad = None
    if isinstance(fn, torch.nn.Module):
        fn.zero_grad(set_to_none=True)


def measure(case, variant, chunk, batch, device, dtype, iters):
    """One (case, variant): peak memory first (before any other call), then saved
    bytes and timing."""
    fn, inputs = build(case, variant, chunk, batch, device, dtype)
    res = {}
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fwd_bwd(fn, inputs)
        sync(device)
        res['peak_bytes'] = torch.cuda.max_memory_allocated() - before
    else:
        before = peak_rss_bytes()
        fwd_bwd(fn, inputs)
        res['peak_bytes'] = peak_rss_bytes() - before
    res['saved_bytes'] = saved_bytes(fn, inputs)
    times = []
    fwd_bwd(fn, inputs)  # warm-up
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fwd_bwd(fn, inputs)
        sync(device)
        times.append(time.perf_counter() - t0)
    res['ms'] = 1e3 * statistics.median(times)
    return res


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_worker(args):
    device = torch.device(args.device)
    dtype = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        res = measure(args.worker_case, args.worker_variant, args.worker_chunk, args.batch,
                      device, dtype, args.iters)
    except torch.cuda.OutOfMemoryError:
        res = dict(error='OOM')
    except MemoryError:
        res = dict(error='OOM')
    print('RESULT ' + json.dumps(res))


def variants(case, chunks):
    extra = [('index-gather', 0)] if case.startswith('op_') else []
    return [('gather', 0)] + extra + [('chunked', c) for c in chunks]


def mib(b):
    return f'{b / 2**20:.1f}'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', default=None, choices=['fp32', 'bf16', 'fp16'],
                   help='default bf16 on cuda, fp32 on cpu')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--cases', default='op_s1,op_s2,op_s3,bra_s3,backbone_t,backbone_s')
    p.add_argument('--chunks', default='1,4', help='routed regions per step of the chunked path')
    p.add_argument('--iters', type=int, default=None, help='default 10 on cuda, 3 on cpu')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--json', default=None)
    p.add_argument('--worker-case', help=argparse.SUPPRESS)
    p.add_argument('--worker-variant', help=argparse.SUPPRESS)
    p.add_argument('--worker-chunk', type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dtype = args.dtype or ('bf16' if args.device.startswith('cuda') else 'fp32')
    args.iters = args.iters or (10 if args.device.startswith('cuda') else 3)
    if args.worker_case:
        return run_worker(args)

    chunks = [int(c) for c in args.chunks.split(',') if c]
    cases = [c for c in args.cases.split(',') if c]
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else \
        f'CPU: {cpu_name()}, {os.cpu_count()} cores'
    print('# BiFormer routed attention: gather vs chunked\n')
    print(f'* date: {time.strftime("%Y-%m-%dT%H:%M:%S%z")}')
    print(f'* device: {name}')
    print(f'* torch: {torch.__version__}, threads {args.threads or torch.get_num_threads()}')
    print(f'* dtype: {args.dtype}, batch {args.batch}, input {W_IMG}x{H_IMG} (WxH), '
          f'n_win {N_WIN}')
    print(f'* command: python {" ".join(sys.argv)}')
    print('* memory: ' + ('torch.cuda.max_memory_allocated above the inputs'
                          if dev.type == 'cuda' else
                          'peak RSS increase over one fwd+bwd, fresh process per row'))
    print('\n| case | shapes |\n|---|---|')
    for c in cases:
        print(f'| {c} | {describe(c, args.batch)} |')
    print('\n| case | variant | fwd+bwd ms | saved MiB | peak MiB | time / gather | '
          'saved / gather | peak / gather |')
    print('|---|---|---|---|---|---|---|---|')
    rows = []
    for case in cases:
        ref = None
        for variant, chunk in variants(case, chunks):
            cmd = [sys.executable, os.path.abspath(__file__), '--device', args.device,
                   '--dtype', args.dtype, '--batch', str(args.batch), '--iters',
                   str(args.iters), '--worker-case', case, '--worker-variant', variant,
                   '--worker-chunk', str(chunk or 4)]
            if args.threads:
                cmd += ['--threads', str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith('RESULT ')]
            label = f'chunked (chunk {chunk})' if variant == 'chunked' else variant
            if r.returncode != 0 or not line:
                err = 'OOM / killed' if r.returncode in (-9, 137) else \
                    (r.stderr.strip().splitlines() or ['?'])[-1][:80]
                print(f'| {case} | {label} | - | - | - | - | - | - | {err}')
                rows.append(dict(case=case, variant=label, error=err))
                continue
            res = json.loads(line[0][7:])
            if 'error' in res:
                print(f'| {case} | {label} | {res["error"]} | | | | | |')
                rows.append(dict(case=case, variant=label, **res))
                continue
            if variant == 'gather':
                ref = res
            ratio = (lambda k: f'{res[k] / ref[k]:.2f}' if ref and ref[k] > 0 else '-')
            print(f'| {case} | {label} | {res["ms"]:.1f} | {mib(res["saved_bytes"])} | '
                  f'{mib(res["peak_bytes"])} | {ratio("ms")} | {ratio("saved_bytes")} | '
                  f'{ratio("peak_bytes")} |', flush=True)
            rows.append(dict(case=case, variant=label, **res))
            if args.json:
                with open(args.json, 'w') as f:
                    json.dump(dict(device=name, torch=torch.__version__, dtype=args.dtype,
                                   batch=args.batch, rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
