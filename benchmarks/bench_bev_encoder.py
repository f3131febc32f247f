#!/usr/bin/env python
"""BEVFormer encoder: re-batched spatial cross-attention (ours, ``dense=False``)
against every BEV query in every camera (``dense=True``), side by side in one run.

    python benchmarks/bench_bev_encoder.py                          # GPU if available
    python benchmarks/bench_bev_encoder.py --device cpu             # CPU, fresh process per row
    python benchmarks/bench_bev_encoder.py --device cpu --cases tiny --iters 3
    python benchmarks/bench_bev_encoder.py --help

The whole :class:`BEVFormerEncoder` (temporal self-attention on a random
``prev_bev``, spatial cross-attention, FFN, per layer) is run, batch 1, with
six cameras at nuScenes' mounting. Only ``layer.sca.dense`` differs between
the two variants; weights and inputs are the same (seed 0).

Cases (embed 256, FFN 512, 8 heads, SCA 8 points, TSA 4 points, 4 pillar
points, pc_range [-51.2, -51.2, -5, 51.2, 51.2, 3]):

* ``tiny``: BEV 50x50, 3 layers, 1 feature level. BEVFormer-tiny's pipeline:
  the 1600x900 image scaled by 0.5 to 800x450 (valid), padded to a multiple of
  32 (800x480), stride 32 -> a 15x25 map;
* ``base``: BEV 200x200, 6 layers, 4 feature levels of the 1600x900 image
  padded to 1600x928: 116x200, 58x100, 29x50, 15x25.

Geometry (:func:`nuscenes_lidar2img`): ego frame x forward, y left, z up; the
LiDAR (nuScenes LIDAR_TOP) at (0.94, 0, 1.84) m with yaw -90 deg in the ego
frame, i.e. lidar x = ego right, lidar y = ego forward, z up; cameras (optical
axis z, x right, y down, horizontal) in BEVFormer's order CAM_FRONT (yaw 0),
FRONT_RIGHT (-55), FRONT_LEFT (+55), BACK (180), BACK_LEFT (+110),
BACK_RIGHT (-110) at roughly their nuScenes positions (~1.5 m high);
intrinsics focal 1266 px, principal point (816, 491) at 1600x900, except
CAM_BACK, whose wider lens has focal 809 px in nuScenes (``--uniform-focal``
gives it 1266 too, which leaves blind wedges beside it), scaled by the image
scale. ``lidar2img = K (4x4) @ ego2cam @ lidar2ego``.

Measured per case and variant, each in a fresh subprocess per (variant, pass):

* ``fwd``: eval mode, ``torch.no_grad()``;
* ``fwd+bwd``: train mode (dropout 0.1 as upstream), ``out.square().mean()``
  backward into the parameters and into ``bev_query``, ``bev_pos`` and the
  image features (which come from the backbone in training); ``prev_bev``
  without grad (upstream computes it under ``no_grad``);
* timing: the first call of the process is the memory measurement and the
  first warm-up call; ``--warmup`` - 1 further warm-up calls, then the median
  of ``--iters`` timed calls (``time.perf_counter``, CUDA synchronised);
* peak memory: on CUDA ``torch.cuda.max_memory_allocated()`` during the first
  call minus what was allocated before; on CPU the increase of the process's
  peak RSS (``ru_maxrss``) over that first call.

Before timing, one process builds the encoder once and runs both variants on
the same weights and inputs in eval mode: max abs difference of the outputs
and of the gradients (inputs and parameters).

On CPU, mmcv's PyTorch deformable-attention path materialises the
``(N*bs*heads, head_dim, queries, levels*points)`` bilinear samples three
times over in the forward (the per-level list, their stack, the weighted
product) and keeps the stack for the backward; a measurement whose estimate
(:func:`estimate_bytes`) exceeds ``--max-est-gb`` is skipped and reported as
such instead of risking the machine's memory.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmvisbackbones.detectors.bevformer.geometry import (  # noqa: E402
    bev_reference_points_3d, project_reference_points)
from mmvisbackbones.detectors.bevformer.transformer import BEVFormerEncoder  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the same timing / memory / machine helpers as the routed-attention benchmark
from bench_biformer_memory import cpu_name, peak_rss_bytes, sync  # noqa: E402

PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
EMBED, FFN, HEADS, SCA_POINTS, TSA_POINTS, PILLAR = 256, 512, 8, 8, 4, 4
NUM_CAMS = 6

#: case -> BEV size, layers, image scale, valid (h, w), padded (H, W), level maps (h, w)
CASES = {
    'tiny': dict(bev=50, layers=3, scale=0.5, valid=(450, 800), pad=(480, 800),
                 levels=[(15, 25)]),
    'base': dict(bev=200, layers=6, scale=1.0, valid=(900, 1600), pad=(928, 1600),
                 levels=[(116, 200), (58, 100), (29, 50), (15, 25)]),
}

#: nuScenes cameras in BEVFormer's order: name, yaw in the ego frame (deg,
#: + = left), position in the ego frame (m), focal (px at 1600x900)
CAMERAS = [
    ('CAM_FRONT', 0.0, (1.70, 0.02, 1.51), 1266.0),
    ('CAM_FRONT_RIGHT', -55.0, (1.55, -0.49, 1.50), 1266.0),
    ('CAM_FRONT_LEFT', 55.0, (1.52, 0.49, 1.51), 1266.0),
    ('CAM_BACK', 180.0, (0.03, 0.00, 1.57), 809.0),
    ('CAM_BACK_LEFT', 110.0, (1.04, 0.48, 1.56), 1266.0),
    ('CAM_BACK_RIGHT', -110.0, (1.03, -0.48, 1.59), 1266.0),
]
PRINCIPAL = (816.0, 491.0)
LIDAR_IN_EGO = (0.94, 0.0, 1.84)
LIDAR_YAW_DEG = -90.0


def _yaw(deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def nuscenes_lidar2img(scale, uniform_focal=False):
    """``(6, 4, 4)`` lidar2img of the six nuScenes cameras for an image scaled
    by ``scale`` from 1600x900."""
    lidar2ego = np.eye(4)
    lidar2ego[:3, :3] = _yaw(LIDAR_YAW_DEG)   # lidar x -> ego -y (right), lidar y -> ego x
    lidar2ego[:3, 3] = LIDAR_IN_EGO
    mats = []
    for _, yaw, pos, focal in CAMERAS:
        a = math.radians(yaw)
        z_axis = np.array([math.cos(a), math.sin(a), 0.0])    # optical axis
        x_axis = np.array([math.sin(a), -math.cos(a), 0.0])   # image right
        y_axis = np.array([0.0, 0.0, -1.0])                   # image down
        cam2ego = np.eye(4)
        cam2ego[:3, :3] = np.stack([x_axis, y_axis, z_axis], 1)
        cam2ego[:3, 3] = pos
        f = 1266.0 if uniform_focal else focal
        K = np.eye(4)
        K[0, 0] = K[1, 1] = f * scale
        K[0, 2], K[1, 2] = PRINCIPAL[0] * scale, PRINCIPAL[1] * scale
        mats.append(K @ np.linalg.inv(cam2ego) @ lidar2ego)
    return np.stack(mats)


def geometry(case, uniform_focal=False, device='cpu', dtype=torch.float32):
    c = CASES[case]
    l2i = torch.as_tensor(nuscenes_lidar2img(c['scale'], uniform_focal), dtype=dtype,
                          device=device)[None]
    img_shapes = torch.tensor([[c['valid']] * NUM_CAMS], dtype=dtype, device=device)
    return l2i, img_shapes, c['pad']


def hit_stats(case, uniform_focal=False):
    """Per-camera hits of the BEV pillars (what SCA's ``bev_mask.any(-1)`` is)."""
    c = CASES[case]
    l2i, img_shapes, pad = geometry(case, uniform_focal)
    ref = bev_reference_points_3d(c['bev'], c['bev'], PILLAR, 1)
    _, mask = project_reference_points(ref, PC_RANGE, l2i, img_shapes, pad)
    hit = mask.any(-1)[:, 0]                                   # (N, Q)
    Q = hit.shape[1]
    per_cam = hit.float().mean(1)
    max_len = int(hit.sum(1).max())
    return dict(Q=Q, pair_frac=float(hit.float().mean()), per_cam=per_cam.tolist(),
                cams_per_query=float(hit.sum(0).float().mean()),
                unseen_frac=float((hit.sum(0) == 0).float().mean()),
                max_len=max_len, computed_frac=max_len / Q)


def estimate_bytes(case, variant, mode, stats, elem=4):
    """Rough CPU peak of mmcv's PyTorch path: S = (N*bs*heads*head_dim) x
    queries x levels x points samples; forward 3 S transient; fwd+bwd
    (layers + 2) S (one stacked S kept per layer, ~2 S transient in the
    backward)."""
    c = CASES[case]
    nq = stats['Q'] if variant == 'dense' else stats['max_len']
    S = NUM_CAMS * EMBED * nq * len(c['levels']) * SCA_POINTS * elem
    return 3 * S if mode == 'fwd' else (c['layers'] + 2) * S


def build(case, dense, device, dtype, uniform_focal=False):
    """-> (encoder, kwargs of its forward). Same weights and inputs for any ``dense``."""
    c = CASES[case]
    torch.manual_seed(0)
    enc = BEVFormerEncoder(num_layers=c['layers'], pc_range=PC_RANGE,
                           num_points_in_pillar=PILLAR,
                           layer=dict(embed_dims=EMBED, num_cams=NUM_CAMS, num_heads=HEADS,
                                      num_levels=len(c['levels']), tsa_points=TSA_POINTS,
                                      sca_points=SCA_POINTS, ffn_dims=FFN, dropout=0.1))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # upstream's init makes every query sample at the same offsets with
        # uniform weights; perturb so that offsets and weights depend on the query
        for name, p in enc.named_parameters():
            if name.endswith(('sampling_offsets.weight', 'attention_weights.weight')):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    for layer in enc.layers:
        layer.sca.dense = dense
    enc = enc.to(device, dtype)
    Q = c['bev'] ** 2
    V = sum(h * w for h, w in c['levels'])
    rnd = (lambda *s: torch.randn(*s, generator=g).to(device, dtype))
    l2i, img_shapes, pad = geometry(case, uniform_focal, device, dtype)
    spatial_shapes = torch.tensor(c['levels'], dtype=torch.long, device=device)
    level_start = torch.cat((spatial_shapes.new_zeros(1),
                             spatial_shapes.prod(1).cumsum(0)[:-1]))
    kw = dict(bev_query=rnd(1, Q, EMBED), feats=rnd(NUM_CAMS, 1, V, EMBED),
              spatial_shapes=spatial_shapes, level_start=level_start, bev_h=c['bev'],
              bev_w=c['bev'], bev_pos=rnd(1, Q, EMBED), lidar2img=l2i, img_shapes=img_shapes,
              pad_shape=pad, prev_bev=rnd(1, Q, EMBED), prev_valid=None,
              shift=torch.tensor([[0.01, -0.02]], dtype=dtype, device=device))
    return enc, kw


GRAD_INPUTS = ('bev_query', 'feats', 'bev_pos')




def make_call(enc, kw, mode):
    if mode == 'fwd':
        enc.eval()

        def call():
            with torch.no_grad():
                enc(**kw)
    else:
        enc.train()
        for k in GRAD_INPUTS:
            kw[k].requires_grad_(True)

        def call():
            enc(**kw).square().mean().backward()
            for k in GRAD_INPUTS:
                kw[k].grad = None
            enc.zero_grad(set_to_none=True)
    return call


def measure(case, variant, mode, device, dtype, iters, warmup, uniform_focal):
    enc, kw = build(case, variant == 'dense', device, dtype, uniform_focal)
    call = make_call(enc, kw, mode)
    res = {}
    sync(device)
    t0 = time.perf_counter()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        sync(device)
        res['peak_bytes'] = torch.cuda.max_memory_allocated() - before
    else:
        before = peak_rss_bytes()
        call()
        res['peak_bytes'] = peak_rss_bytes() - before
    res['first_ms'] = 1e3 * (time.perf_counter() - t0)
    for _ in range(max(warmup - 1, 0)):
        call()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - t0)
    res['ms'] = 1e3 * statistics.median(times)
    res['times_ms'] = [1e3 * t for t in times]
    return res


def check(case, device, dtype, uniform_focal):
    """Both variants on the same weights/inputs, eval mode: output and gradient diffs."""
    enc, kw = build(case, False, device, dtype, uniform_focal)
    enc.eval()
    for k in GRAD_INPUTS:
        kw[k].requires_grad_(True)
    res = {}
    outs, grads = {}, {}
    for dense in (False, True):
        for layer in enc.layers:
            layer.sca.dense = dense
        out = enc(**kw)
        params = [p for p in enc.parameters()]
        g = torch.autograd.grad(out.square().mean(), [kw[k] for k in GRAD_INPUTS] + params,
                                allow_unused=True)
        outs[dense] = out.detach()
        grads[dense] = g
    res['out_diff'] = float((outs[True] - outs[False]).abs().max())
    res['out_max'] = float(outs[False].abs().max())
    gd, gm = 0.0, 0.0
    for a, b in zip(grads[False], grads[True]):
        if a is None or b is None:
            continue
        gd = max(gd, float((a - b).abs().max()))
        gm = max(gm, float(a.abs().max()))
    res['grad_diff'] = gd
    res['grad_max'] = gm
    return res



def versions():
    out = [f'torch {torch.__version__}']
    for mod in ('mmcv', 'mmdet', 'mmdet3d', 'mmengine'):
        try:
            out.append(f'{mod} {__import__(mod).__version__}')
        except Exception:  # noqa: BLE001
            out.append(f'{mod} n/a')
    return ', '.join(out)


def run_worker(args, device, dtype):
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.worker_mode == 'check':
            res = check(args.worker_case, device, dtype, args.uniform_focal)
        else:
            res = measure(args.worker_case, args.worker_variant, args.worker_mode, device, dtype,
                          args.iters, args.warmup, args.uniform_focal)
    except (torch.cuda.OutOfMemoryError, MemoryError):
        res = dict(error='OOM')
    print('RESULT ' + json.dumps(res), flush=True)


def subprocess_result(args, case, variant, mode):
    cmd = [sys.executable, os.path.abspath(__file__), '--device', args.device, '--dtype',
           args.dtype, '--iters', str(args.iters), '--warmup', str(args.warmup),
           '--worker-case', case, '--worker-variant', variant, '--worker-mode', mode]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    if args.uniform_focal:
        cmd += ['--uniform-focal']
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = [x for x in r.stdout.splitlines() if x.startswith('RESULT ')]
    if r.returncode != 0 or not line:
        err = 'OOM / killed' if r.returncode in (-9, 137) else \
            (r.stderr.strip().splitlines() or ['?'])[-1][:100]
        return dict(error=err, wall_s=wall)
    res = json.loads(line[0][7:])
    res['wall_s'] = wall
    return res


def mib(b):
    return f'{b / 2**20:.0f}'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--cases', nargs='+', default=['tiny', 'base'], choices=list(CASES))
    p.add_argument('--iters', type=int, default=2, help='timed calls (median reported)')
    p.add_argument('--warmup', type=int, default=1,
                   help='warm-up calls, the memory-measuring first call included')
    p.add_argument('--no-backward', action='store_true', help='forward only')
    p.add_argument('--no-check', action='store_true', help='skip the dense-vs-ours check')
    p.add_argument('--max-est-gb', type=float, default=None,
                   help='skip a CPU measurement whose estimated peak exceeds this '
                   '(default 10 on cpu, no limit on cuda)')
    p.add_argument('--uniform-focal', action='store_true',
                   help='focal 1266 px for CAM_BACK too (nuScenes: 809)')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--json', default=None)
    p.add_argument('--worker-case', help=argparse.SUPPRESS)
    p.add_argument('--worker-variant', help=argparse.SUPPRESS)
    p.add_argument('--worker-mode', help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)[args.dtype]
    if args.worker_case:
        return run_worker(args, device, dtype)
    if args.max_est_gb is None:
        args.max_est_gb = 10.0 if device.type == 'cpu' else float('inf')

    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU: {cpu_name()}, {os.cpu_count()} cores'
    print('# BEVFormer encoder: re-batched SCA (ours, dense=False) vs every query in every '
          'camera (dense=True)\n')
    print(f'* date: {time.strftime("%Y-%m-%dT%H:%M:%S%z")}')
    print(f'* device: {name}')
    print(f'* versions: {versions()}, threads {args.threads or torch.get_num_threads()}')
    print(f'* dtype: {args.dtype}, batch 1, {NUM_CAMS} cameras, embed {EMBED}, ffn {FFN}, '
          f'heads {HEADS}, SCA points {SCA_POINTS}, TSA points {TSA_POINTS}, '
          f'pillar points {PILLAR}, pc_range {PC_RANGE}, prev_bev random')
    print(f'* cameras: nuScenes mounting, CAM_BACK focal '
          f'{"1266 (--uniform-focal)" if args.uniform_focal else "809"} px, others 1266 px')
    print(f'* command: python {" ".join(sys.argv)}')
    print('* memory: ' + ('torch.cuda.max_memory_allocated above the inputs'
                          if device.type == 'cuda' else
                          'peak RSS increase over the first call, fresh process per row'))
    print(f'* timing: median of {args.iters} calls after {args.warmup} warm-up '
          '(the first call measures memory)')
    if device.type == 'cpu':
        print(f'* skip: CPU measurements estimated above {args.max_est_gb:g} GB')

    print('\n| case | BEV | layers | levels (h x w) | valid image | padded | queries Q |')
    print('|---|---|---|---|---|---|---|')
    for case in args.cases:
        c = CASES[case]
        lv = ', '.join(f'{h}x{w}' for h, w in c['levels'])
        print(f'| {case} | {c["bev"]}x{c["bev"]} | {c["layers"]} | {lv} | '
              f'{c["valid"][1]}x{c["valid"][0]} | {c["pad"][1]}x{c["pad"][0]} | '
              f'{c["bev"] ** 2} |')

    stats = {case: hit_stats(case, args.uniform_focal) for case in args.cases}
    print('\n## Camera hits (a camera "sees" a query when any of its pillar points '
          'projects into the valid image)\n')
    print('| case | hit pairs / (cameras x Q) | per camera (F, FR, FL, B, BL, BR) | '
          'cameras per query | queries seen by none | re-batched length / Q | '
          'SCA queries computed, ours / dense |')
    print('|---|---|---|---|---|---|---|')
    for case in args.cases:
        s = stats[case]
        pc = ', '.join(f'{x:.3f}' for x in s['per_cam'])
        print(f'| {case} | {s["pair_frac"]:.3f} | {pc} | {s["cams_per_query"]:.2f} | '
              f'{s["unseen_frac"]:.4f} | {s["max_len"]}/{s["Q"]} = {s["computed_frac"]:.3f} | '
              f'{s["computed_frac"]:.3f} |')
    print('\n(ours pads every camera to the longest camera\'s hit count, so it computes '
          '`cameras x max hits` queries instead of `cameras x Q`.)')

    checks = {}
    if not args.no_check:
        print('\n## Agreement (same weights and inputs, eval mode, both variants in one '
              'process)\n')
        print('| case | max abs diff out | max abs out | max abs diff grads | max abs grad | '
              'note |')
        print('|---|---|---|---|---|---|')
        for case in args.cases:
            est = estimate_bytes(case, 'dense', 'fwd', stats[case]) * 2
            if device.type == 'cpu' and est > args.max_est_gb * 1e9:
                checks[case] = dict(error=f'skipped (dense estimated {est / 1e9:.0f} GB)')
                print(f'| {case} | - | - | - | - | {checks[case]["error"]} |', flush=True)
                continue
            r = subprocess_result(args, case, 'both', 'check')
            checks[case] = r
            if 'error' in r:
                print(f'| {case} | - | - | - | - | {r["error"]} |', flush=True)
            else:
                print(f'| {case} | {r["out_diff"]:.2e} | {r["out_max"]:.2f} | '
                      f'{r["grad_diff"]:.2e} | {r["grad_max"]:.2e} | |', flush=True)

    modes = ['fwd'] if args.no_backward else ['fwd', 'fwdbwd']
    print(f'\n## Results ({args.dtype}; times in ms, peak in MiB; ratios = ours / dense, '
          'same run)\n')
    print('| case | variant | fwd ms | fwd+bwd ms | peak fwd MiB | peak fwd+bwd MiB | '
          'fwd / dense | f+b / dense | peak fwd / dense | peak f+b / dense | note |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    rows = []
    for case in args.cases:
        ref = {}
        for variant in ('dense', 'ours'):
            vkey = 'dense' if variant == 'dense' else 'sparse'
            res, notes = {}, []
            for mode in ('fwd', 'fwdbwd'):
                if mode not in modes:
                    notes.append('fwd+bwd not run (--no-backward)')
                    continue
                est = estimate_bytes(case, vkey, mode, stats[case])
                if device.type == 'cpu' and est > args.max_est_gb * 1e9:
                    notes.append(f'{"fwd" if mode == "fwd" else "fwd+bwd"} skipped '
                                 f'(est. {est / 1e9:.1f} GB)')
                    continue
                r = subprocess_result(args, case, vkey, mode)
                if 'error' in r:
                    notes.append(f'{mode}: {r["error"]}')
                    continue
                res[mode] = r
            if variant == 'dense':
                ref = res

            def fmt(mode, key, f):
                return f(res[mode][key]) if mode in res else '-'

            def ratio(mode, key):
                if mode in res and mode in ref and ref[mode][key] > 0:
                    return f'{res[mode][key] / ref[mode][key]:.2f}'
                return '-'

            label = 'dense (every query, every camera)' if variant == 'dense' else \
                'ours (re-batched)'
            print(f'| {case} | {label} | {fmt("fwd", "ms", lambda x: f"{x:.1f}")} | '
                  f'{fmt("fwdbwd", "ms", lambda x: f"{x:.1f}")} | '
                  f'{fmt("fwd", "peak_bytes", mib)} | {fmt("fwdbwd", "peak_bytes", mib)} | '
                  f'{ratio("fwd", "ms")} | {ratio("fwdbwd", "ms")} | '
                  f'{ratio("fwd", "peak_bytes")} | {ratio("fwdbwd", "peak_bytes")} | '
                  f'{"; ".join(notes)} |', flush=True)
            rows.append(dict(case=case, variant=variant, notes=notes, **res))
            if args.json:
                with open(args.json, 'w') as f:
                    json.dump(dict(device=name, versions=versions(), dtype=args.dtype,
                                   command=' '.join(sys.argv), stats=stats, checks=checks,
                                   rows=rows), f, indent=1)
    print(f'\n_total benchmark time {time.perf_counter() - t_start:.0f} s_')


if __name__ == '__main__':
    main()
