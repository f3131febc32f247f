#!/usr/bin/env python
"""Benchmark of the selective-scan backends of ``mmvisbackbones``.

Times the forward and the forward+backward of
:func:`mmvisbackbones.ops.selective_scan.selective_scan` for every backend on
the shapes that VMamba-T/S/B (all four stages, 512x512 and 1280x800 inputs)
and Vim-S (224 and 1248 inputs) call it with, and prints a markdown table
(and optionally JSON). See ``BENCHMARKS.md`` at the repository root.

    python benchmarks/bench_selective_scan.py                    # GPU, all cases
    python benchmarks/bench_selective_scan.py --device cpu --quick
    python benchmarks/bench_selective_scan.py --list-cases

Needs only torch (triton and mmengine optional: mmengine is imported by
``mmvisbackbones``). Nothing here asserts a target; the targets are printed
next to the measured values as information.
"""
import argparse
import datetime
import fnmatch
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Dict, List, NamedTuple, Optional

import torch

try:
    from mmvisbackbones.ops.selective_scan import (available_backends,
                                                   selective_scan, selective_scan_chunked)
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    from mmvisbackbones.ops.selective_scan import (available_backends,
                                                   selective_scan, selective_scan_chunked)

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
GPU_ONLY_BACKENDS = ('triton', )
COMPILE_BACKEND = 'torch_compile'
REFERENCE_BACKEND = 'torch'

# information only (from the issue): never asserted
TARGET_FB_OVER_F = 3.5        # triton: fwd+bwd time <= 3.5 x fwd time
TARGET_FWD_BW_FRACTION = 0.70  # triton: fwd >= 70% of the HBM bound, stage 1

# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------


class Case(NamedTuple):
    name: str
    model: str      # 'VMamba-T', 'Vim-S', ...
    stage: int      # 1..4 for VMamba (stage 1 = stride 4), 0 for Vim
    image: str      # input resolution, WxH
    batch: int      # Bt
    dim: int        # Dm (all directions / channels of one call)
    length: int     # L
    groups: int     # G
    d_state: int    # N
    has_z: bool
    out_fp32: bool
    quick_only: bool = False
    note: str = ''

    @property
    def elems(self) -> int:
        return self.batch * self.dim * self.length

    @property
    def shape_str(self) -> str:
        return (f'Bt={self.batch} Dm={self.dim} L={self.length} '
                f'G={self.groups} N={self.d_state}')


# upstream VMamba v2 archs: dims of the four stages, ssm_ratio; d_state=1
VMAMBA_ARCHS = {
    't': ([96, 192, 384, 768], 1.0),
    's': ([96, 192, 384, 768], 2.0),
    'b': ([128, 256, 512, 1024], 2.0),
}
VMAMBA_DIRECTIONS = 4
VMAMBA_IMAGES = [(512, 512), (1280, 800)]  # (W, H)
VIM_S_DIM, VIM_EXPAND, VIM_D_STATE, VIM_PATCH = 384, 2, 16, 16
VIM_IMAGES = [224, 1248]


def vmamba_case(arch: str, stage: int, w: int, h: int, batch: int = 2,
                quick_only: bool = False) -> Case:
    """SS2D call of one VMamba stage: the 4 scan directions are merged into
    the channel axis (Dm = 4 * d_inner) and are the G = 4 groups of B/C."""
    dims, ratio = VMAMBA_ARCHS[arch]
    d_inner = int(ratio * dims[stage - 1])
    s = 4 * 2**(stage - 1)
    H, W = math.ceil(h / s), math.ceil(w / s)
    return Case(f'vmamba-{arch}_s{stage}_{w}x{h}', f'VMamba-{arch.upper()}',
                stage, f'{w}x{h}', batch, VMAMBA_DIRECTIONS * d_inner, H * W,
                VMAMBA_DIRECTIONS, 1, False, True, quick_only,
                f'{H}x{W} tokens, 4 directions, d_inner={d_inner}')


def vim_case(img: int, batch: int = 2) -> Case:
    """One direction of a Vim-S (bidirectional Mamba) layer; Vim runs two
    such calls per layer (forward and backward direction)."""
    L = (img // VIM_PATCH)**2 + 1  # + class token
    return Case(f'vim-s_{img}', 'Vim-S', 0, f'{img}x{img}', batch,
                VIM_EXPAND * VIM_S_DIM, L, 1, VIM_D_STATE, True, False, False,
                'per direction (Vim runs 2 per layer)')


def all_cases() -> List[Case]:
    cases = []
    for arch in VMAMBA_ARCHS:
        for w, h in VMAMBA_IMAGES:
            for stage in (1, 2, 3, 4):
                cases.append(vmamba_case(arch, stage, w, h))
    cases += [vim_case(img) for img in VIM_IMAGES]
    # reduced sizes for --quick (CPU): stage-1/2 layouts at a 256x256 input
    cases += [vmamba_case('t', 1, 256, 256, quick_only=True),
              vmamba_case('t', 2, 256, 256, quick_only=True)]
    return cases


QUICK_CASES = ['vim-s_224', 'vmamba-t_s4_512x512', 'vmamba-t_s3_512x512',
               'vmamba-t_s2_256x256', 'vmamba-t_s1_256x256']


def select_cases(patterns: Optional[str], quick: bool) -> List[Case]:
    catalog = {c.name: c for c in all_cases()}
    if not patterns:
        if quick:
            return [catalog[n] for n in QUICK_CASES]
        return [c for c in catalog.values() if not c.quick_only]
    chosen = []
    for pat in patterns.split(','):
        pat = pat.strip()
        if not pat:
            continue
        hits = [n for n in catalog if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise SystemExit(f'unknown case {pat!r}; run --list-cases')
        chosen += [catalog[n] for n in hits if catalog[n] not in chosen]
    return chosen


# --------------------------------------------------------------------------
# bytes model
# --------------------------------------------------------------------------


def bytes_model(case: Case, in_bytes: int) -> Dict[str, int]:
    """Minimum HBM traffic of one selective-scan call, in bytes.

    Every tensor is counted as crossing memory exactly once per pass (a
    perfectly fused kernel); intermediate states (``(Bt, Dm, N, L)``), chunk
    states saved for the backward and the optional last state are NOT
    counted, so this is a lower bound and ``bytes / time`` is an *effective*
    bandwidth.

    Forward:
        reads  ``u``, ``delta`` (and ``z``) ``Bt*Dm*L`` each in the input
               dtype; ``B``, ``C`` ``Bt*G*N*L`` each in the input dtype;
               ``A`` ``Dm*N``, ``D`` and ``delta_bias`` ``Dm`` each, fp32;
        writes ``y`` ``Bt*Dm*L`` in fp32 if ``out_fp32`` else input dtype.
    Backward (on top of the forward):
        reads  the forward's inputs again (same bytes as above) and ``dout``
               (``y``'s size and dtype);
        writes ``du``, ``ddelta`` (and ``dz``) in the input dtype, ``dB``,
               ``dC`` in the input dtype, ``dA``, ``dD``, ``ddelta_bias`` fp32.
    ``fwd+bwd`` = forward bytes + backward bytes.
    """
    E = case.batch * case.dim * case.length
    BC = case.batch * case.groups * case.d_state * case.length
    n_seq = 3 if case.has_z else 2
    seq = n_seq * E * in_bytes
    bc = 2 * BC * in_bytes
    params = 4 * (case.dim * case.d_state + 2 * case.dim)
    out_bytes = E * (4 if case.out_fp32 else in_bytes)
    fwd_read = seq + bc + params
    fwd = fwd_read + out_bytes
    bwd = fwd_read + out_bytes + seq + bc + params
    return {'fwd': fwd, 'bwd': bwd, 'fwd_bwd': fwd + bwd}


# --------------------------------------------------------------------------
# device info
# --------------------------------------------------------------------------

# (substrings that must all be in the upper-cased device name, GB/s)
PEAK_BW_TABLE = [
    (('GH200', ), None),            # several memory configurations: unknown
    (('H200', ), 4800.0),
    (('H100', 'PCIE'), 2000.0),
    (('H100', 'NVL'), None),        # not in the table we use: unknown
    (('H100', ), 3350.0),           # SXM (HBM3)
    (('A100', '80GB', 'PCIE'), 1935.0),
    (('A100', '80GB'), 2039.0),
    (('A100', '40GB'), 1555.0),
    (('A100', 'PCIE'), 1555.0),     # 'A100-PCIE-40GB'
]


def peak_bandwidth(device_name: str) -> Optional[float]:
    """HBM peak (GB/s) from the CUDA device name, None when unknown."""
    up = device_name.upper()
    for keys, bw in PEAK_BW_TABLE:
        if all(k in up for k in keys):
            return bw
    return None


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header_info(args, device: torch.device) -> Dict[str, str]:
    try:
        import triton
        triton_ver = triton.__version__
    except Exception as e:  # noqa: BLE001
        triton_ver = f'not importable ({type(e).__name__})'
    if device.type == 'cuda':
        dev_name = torch.cuda.get_device_name(device)
    else:
        dev_name = f'CPU: {cpu_name()}, {os.cpu_count()} cores'
    return {
        'date': datetime.datetime.now().astimezone().isoformat(
            timespec='seconds'),
        'device': dev_name,
        'torch': torch.__version__,
        'triton': triton_ver,
        'cuda': torch.version.cuda or 'n/a (CPU build)',
        'torch_threads': str(torch.get_num_threads()),
        'dtype': args.dtype,
        'backends_available': ','.join(available_backends()),
        'command': ' '.join(shlex.quote(a)
                            for a in [os.path.basename(sys.executable)] +
                            sys.argv),
    }


# --------------------------------------------------------------------------
# inputs and calls
# --------------------------------------------------------------------------


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device,
                seed: int = 0):
    """Inputs shaped and scaled like VMamba's / Vim's (A = -[1..N], D = 1,
    delta_bias = inverse softplus of dt in [1e-3, 1e-1])."""
    g = torch.Generator(device='cpu').manual_seed(seed)
    Bt, Dm, L, G, N = (case.batch, case.dim, case.length, case.groups,
                       case.d_state)

    def rnd(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale).to(device, dt)

    u = rnd(Bt, Dm, L)
    delta = rnd(Bt, Dm, L, scale=0.1)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(Dm, 1).to(device)
    B = rnd(Bt, G, N, L)
    C = rnd(Bt, G, N, L)
    D = torch.ones(Dm, dtype=torch.float32, device=device)
    dt = torch.exp(torch.rand(Dm, generator=g) *
                   (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = (dt + torch.log(-torch.expm1(-dt))).to(device)
    z = rnd(Bt, Dm, L) if case.has_z else None
    return [u, delta, A, B, C, D, z, delta_bias]


def make_fn(backend: str):
    """Callable ``fn(u, delta, A, B, C, D, z, delta_bias, softplus,
    return_last_state, out_fp32)``."""
    if backend == COMPILE_BACKEND:
        # the chunked torch path itself: through the public op, torch.compile
        # would see one opaque mmvb::recurrence node (ops/_compiled.py)
        return torch.compile(lambda *a: selective_scan_chunked(*a))
    return lambda *a: selective_scan(*a, backend=backend)


def short_error(e: BaseException, limit: int = 110) -> str:
    msg = str(e).strip().splitlines()
    first = msg[0].strip() if msg else ''
    s = f'{type(e).__name__}: {first}' if first else type(e).__name__
    return s if len(s) <= limit else s[:limit - 3] + '...'


class Timer:
    """Median wall time of ``fn()`` in ms (CUDA events on GPU, with an
    optional L2 flush before every timed call; perf_counter on CPU)."""

    def __init__(self, device: torch.device, warmup: int, iters: int,
                 max_seconds: float, flush_l2: bool):
        self.device, self.warmup, self.iters = device, warmup, iters
        self.max_seconds = max_seconds
        self.flush = None
        if device.type == 'cuda' and flush_l2:
            self.flush = torch.empty(256 * 2**20, dtype=torch.int8,
                                     device=device)

    def sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def __call__(self, fn):
        # the warm-up calls (the first may compile / autotune) set the
        # iteration count so that one measurement stays within max_seconds.
        # Returns (median ms, timed calls, first call s, fastest ms).
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        first = time.perf_counter() - t0
        warmup = self.warmup - 1
        if warmup < 1 and first * self.iters > self.max_seconds:
            warmup = 1  # the first call may include compilation: probe once
        t0 = time.perf_counter()
        for _ in range(warmup):
            fn()
        self.sync()
        per_call = ((time.perf_counter() - t0) / warmup if warmup > 0 else
                    first)
        iters = max(1, min(self.iters,
                           int(self.max_seconds / max(per_call, 1e-9))))
        times = []
        if self.device.type == 'cuda':
            ev = [(torch.cuda.Event(enable_timing=True),
                   torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
            for s, e in ev:
                if self.flush is not None:
                    self.flush.zero_()
                s.record()
                fn()
                e.record()
            self.sync()
            times = [s.elapsed_time(e) for s, e in ev]
        else:
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times), iters, first, min(times)


def graph_break_count() -> Optional[int]:
    try:
        from torch._dynamo.utils import counters
        return int(sum(counters['graph_break'].values()))
    except Exception:  # noqa: BLE001
        return None


def reset_dynamo():
    try:
        import torch._dynamo
        torch._dynamo.reset()
        from torch._dynamo.utils import counters
        counters.clear()
    except Exception:  # noqa: BLE001
        pass


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------


def skip_reason(backend: str, case: Case, device: torch.device,
                args) -> Optional[str]:
    if backend in GPU_ONLY_BACKENDS and device.type != 'cuda':
        return 'skipped (GPU only)'
    if backend != COMPILE_BACKEND and backend not in available_backends():
        return 'unavailable (not in available_backends())'
    if backend == 'naive' and case.elems > args.naive_max_elems:
        return 'skipped (too slow)'
    return None


def measure(case: Case, backend: str, inputs, timer: Timer,
            device: torch.device, args) -> Dict:
    row = {'case': case.name, 'backend': backend, 'fwd_ms': None,
           'fwd_bwd_ms': None, 'peak_mem_mib': None, 'note': ''}
    reason = skip_reason(backend, case, device, args)
    if reason:
        row['note'] = reason
        return row

    if backend == COMPILE_BACKEND:
        reset_dynamo()
    try:
        fn = make_fn(backend)
    except Exception as e:  # noqa: BLE001
        row['note'] = (f'compile failed: {short_error(e)}'
                       if backend == COMPILE_BACKEND else
                       f'error: {short_error(e)}')
        return row
    flags = (True, False, case.out_fp32)  # softplus, last state, out_fp32
    notes = []

    def fwd():
        with torch.no_grad():
            return fn(*inputs, *flags)

    leaves = [None if t is None else t.detach().requires_grad_(True)
              for t in inputs]
    wrt = [t for t in leaves if t is not None]
    out_dtype = torch.float32 if case.out_fp32 else inputs[0].dtype
    dout = torch.randn(inputs[0].shape, device=device, dtype=out_dtype,
                       generator=torch.Generator(device=device).manual_seed(1))

    def fwd_bwd():
        out = fn(*leaves, *flags)
        return torch.autograd.grad(out, wrt, dout)

    def fail(e: BaseException, phase: str) -> str:
        if isinstance(e, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            return f'{phase}: OOM'
        if backend == COMPILE_BACKEND:
            return f'compile failed: {short_error(e)}'
        return f'{phase} error: {short_error(e)}'

    for key, phase, f in (('fwd_ms', 'fwd', fwd),
                          ('fwd_bwd_ms', 'fwd+bwd', fwd_bwd)):
        try:
            ms, iters, first, fastest = timer(f)
            row[key] = ms
            row[key.replace('_ms', '_min_ms')] = fastest
            row[key.replace('_ms', '_iters')] = iters
            row[key.replace('_ms', '_first_call_s')] = first
        except Exception as e:  # noqa: BLE001
            notes.append(fail(e, phase))
            if backend == COMPILE_BACKEND:
                break

    if device.type == 'cuda' and row['fwd_bwd_ms'] is not None:
        try:
            timer.sync()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fwd_bwd()
            timer.sync()
            row['peak_mem_mib'] = (torch.cuda.max_memory_allocated(device) -
                                   base) / 2**20
        except Exception as e:  # noqa: BLE001
            notes.append(fail(e, 'memory'))

    if backend == COMPILE_BACKEND:
        n = graph_break_count()
        if n:
            notes.append(f'{n} graph break(s)')
    row['note'] = '; '.join(notes)
    return row


def correctness_check(case: Case, backends: List[str], dtype, device,
                      args) -> List[Dict]:
    """Max |out_backend - out_torch| of the forward on one case."""
    inputs = make_inputs(case, dtype, device)
    flags = (True, False, case.out_fp32)
    results, ref = [], None
    try:
        with torch.no_grad():
            ref = selective_scan(*inputs, *flags,
                                 backend=REFERENCE_BACKEND).float()
    except Exception as e:  # noqa: BLE001
        return [{'backend': REFERENCE_BACKEND,
                 'note': f'reference failed: {short_error(e)}'}]
    for b in backends:
        r = {'backend': b, 'max_abs_diff': None, 'note': ''}
        reason = skip_reason(b, case, device, args)
        if b == REFERENCE_BACKEND:
            r['max_abs_diff'] = 0.0
            r['note'] = 'reference'
        elif reason:
            r['note'] = reason
        else:
            try:
                if b == COMPILE_BACKEND:
                    reset_dynamo()
                with torch.no_grad():
                    out = make_fn(b)(*inputs, *flags).float()
                r['max_abs_diff'] = (out - ref).abs().max().item()
            except Exception as e:  # noqa: BLE001
                r['note'] = (f'compile failed: {short_error(e)}'
                             if b == COMPILE_BACKEND else
                             f'error: {short_error(e)}')
        results.append(r)
    if ref is not None:
        for r in results:
            r['ref_max_abs'] = ref.abs().max().item()
    return results


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------


def fmt(x, spec='.3f', none='-'):
    return none if x is None else format(x, spec)


def fmt_gbps(x):
    if x is None:
        return '-'
    return format(x, '.0f' if x >= 100 else '.1f' if x >= 10 else '.2f')


def md_table(headers: List[str], rows: List[List[str]]) -> str:
    lines = ['| ' + ' | '.join(headers) + ' |',
             '|' + '|'.join('---' for _ in headers) + '|']
    for r in rows:
        lines.append('| ' + ' | '.join(str(c).replace('|', '\\|')
                                       for c in r) + ' |')
    return '\n'.join(lines)


def derive(rows: List[Dict], cases: Dict[str, Case], in_bytes: int,
           peak_bw: Optional[float]):
    """Add GB/s, fraction of the bound and the ratios to each row."""
    ref = {r['case']: r for r in rows if r['backend'] == REFERENCE_BACKEND}
    for r in rows:
        bm = bytes_model(cases[r['case']], in_bytes)
        r['bytes_fwd'], r['bytes_fwd_bwd'] = bm['fwd'], bm['fwd_bwd']
        for key, bkey in (('fwd', 'bytes_fwd'), ('fwd_bwd', 'bytes_fwd_bwd')):
            ms = r[f'{key}_ms']
            gbps = None if not ms else r[bkey] / (ms * 1e-3) / 1e9
            r[f'{key}_gbps'] = gbps
            r[f'{key}_bw_frac'] = (gbps / peak_bw
                                   if gbps is not None and peak_bw else None)
        r['fb_over_f'] = (r['fwd_bwd_ms'] / r['fwd_ms']
                          if r['fwd_ms'] and r['fwd_bwd_ms'] else None)
        t = ref.get(r['case'])
        for key in ('fwd_ms', 'fwd_bwd_ms', 'peak_mem_mib'):
            out_key = key.replace('_ms', '').replace('_mib', '') + '_vs_torch'
            r[out_key] = (r[key] / t[key] if t and r[key] is not None and
                          t[key] else None)


def results_table(rows: List[Dict], device: torch.device) -> str:
    pct = lambda x: fmt(None if x is None else 100 * x, '.0f') + (  # noqa
        '%' if x is not None else '')
    na = 'n/a'
    headers = ['case', 'backend', 'fwd ms', 'fwd+bwd ms', '(f+b)/f',
               'fwd GB/s', 'fwd %HBM', 'f+b GB/s', 'f+b %HBM',
               'fwd / torch', 'f+b / torch', 'peak MiB', 'mem / torch',
               'note']
    out = []
    for r in rows:
        cpu = device.type != 'cuda'
        out.append([
            r['case'], r['backend'], fmt(r['fwd_ms']),
            fmt(r['fwd_bwd_ms']), fmt(r['fb_over_f'], '.2f'),
            fmt_gbps(r['fwd_gbps']),
            na if cpu or (r['fwd_gbps'] and r['fwd_bw_frac'] is None)
            else pct(r['fwd_bw_frac']),
            fmt_gbps(r['fwd_bwd_gbps']),
            na if cpu or (r['fwd_bwd_gbps'] and r['fwd_bwd_bw_frac'] is None)
            else pct(r['fwd_bwd_bw_frac']),
            fmt(r['fwd_vs_torch'], '.2f'), fmt(r['fwd_bwd_vs_torch'], '.2f'),
            na if cpu else fmt(r['peak_mem_mib'], '.1f'),
            na if cpu else fmt(r['peak_mem_vs_torch'], '.2f'),
            r['note'] or ''
        ])
    return md_table(headers, out)


def targets_section(rows: List[Dict], cases: Dict[str, Case],
                    device: torch.device) -> str:
    lines = [
        '### Targets (information only, not asserted)',
        '',
        f'* triton fwd+bwd <= {TARGET_FB_OVER_F}x its fwd time (all cases)',
        f'* triton fwd >= {TARGET_FWD_BW_FRACTION:.0%} of the HBM bandwidth '
        'bound at stage-1 shapes (bytes model above)',
        '',
    ]
    sel = [r for r in rows if r['backend'] in ('triton', REFERENCE_BACKEND)
           and (r['fwd_ms'] or r['fwd_bwd_ms'])]
    if not any(r['backend'] == 'triton' for r in sel):
        lines.append('triton was not measured in this run (see the table '
                     'notes); torch shown for reference.' if sel else
                     'triton was not measured in this run.')
        lines.append('')
    if not sel:
        return '\n'.join(lines)
    out = []
    for r in sel:
        c = cases[r['case']]
        frac = r['fwd_bw_frac']
        stage1 = c.stage == 1
        out.append([
            r['case'], r['backend'], fmt(r['fb_over_f'], '.2f'),
            f'<= {TARGET_FB_OVER_F}',
            ('n/a' if device.type != 'cuda' or frac is None else
             f'{100 * frac:.0f}%') if stage1 else '-',
            f'>= {TARGET_FWD_BW_FRACTION:.0%}' if stage1 else '-',
        ])
    lines.append(md_table(['case', 'backend', '(f+b)/f measured',
                           '(f+b)/f target', 'fwd %HBM (stage 1)',
                           'fwd %HBM target'], out))
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', choices=['cuda', 'cpu'],
                   default='cuda' if cuda else 'cpu',
                   help='default: cuda if available')
    p.add_argument('--dtype', choices=list(DTYPES),
                   help='u/delta/z/B/C dtype (A, D, delta_bias are fp32); '
                   'default bf16 on cuda, fp32 on cpu')
    p.add_argument('--backends',
                   help='comma-separated; default triton,torch,torch_compile '
                   'on cuda, torch,naive on cpu')
    p.add_argument('--cases', help='comma-separated case names or globs '
                   '(e.g. "vmamba-t_*,vim-s_224"); default all (or the '
                   '--quick set)')
    p.add_argument('--quick', action='store_true',
                   help='small subset with reduced sizes (for CPU)')
    p.add_argument('--warmup', type=int,
                   help='warm-up calls (default 5 cuda, 1 cpu)')
    p.add_argument('--iters', type=int,
                   help='timed calls, median reported (default 20 cuda, '
                   '5 cpu); reduced to fit --max-seconds')
    p.add_argument('--max-seconds', type=float, default=5.0,
                   help='time budget of one measurement; iterations are cut '
                   'to fit it (default 5)')
    p.add_argument('--threads', type=int,
                   help='torch.set_num_threads on cpu (default: torch\'s '
                   'default)')
    p.add_argument('--peak-bw', type=float, metavar='GB/s',
                   help='HBM peak bandwidth override (default: from the '
                   'device name)')
    p.add_argument('--naive-max-elems', type=int, default=2 * 2**20,
                   help="skip 'naive' when Bt*Dm*L exceeds this (default "
                   '2Mi = 2097152)')
    p.add_argument('--no-flush-l2', action='store_true',
                   help='on cuda, do not flush L2 before each timed call')
    p.add_argument('--no-check', action='store_true',
                   help='skip the correctness spot check')
    p.add_argument('--json', metavar='OUT', help='also write results as JSON')
    p.add_argument('--list-cases', action='store_true',
                   help='print the cases and exit')
    args = p.parse_args(argv)
    on_cuda = args.device == 'cuda'
    if args.dtype is None:
        args.dtype = 'bf16' if on_cuda else 'fp32'
    if args.backends is None:
        args.backends = ('triton,torch,torch_compile' if on_cuda else
                         'torch,naive')
    if args.warmup is None:
        args.warmup = 5 if on_cuda else 1
    if args.iters is None:
        args.iters = 20 if on_cuda else 5
    args.warmup = max(args.warmup, 1)
    args.iters = max(args.iters, 1)
    return args


def main(argv=None):
    args = parse_args(argv)
    cases = select_cases(args.cases, args.quick)
    if args.list_cases:
        rows = [[c.name, c.model, str(c.stage or '-'), c.image, c.shape_str,
                 'yes' if c.has_z else 'no', c.note +
                 (' [quick only]' if c.quick_only else '')]
                for c in select_cases('*', False)]
        print(md_table(['case', 'model', 'stage', 'input', 'shape', 'z',
                        'note'], rows))
        return 0
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: CUDA is not available '
                         '(use --device cpu)')
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    in_bytes = torch.empty((), dtype=dtype).element_size()
    backends = [b.strip() for b in args.backends.split(',') if b.strip()]
    info = header_info(args, device)
    if device.type == 'cuda':
        peak_bw = args.peak_bw or peak_bandwidth(info['device'])
        bw_src = ('--peak-bw' if args.peak_bw else
                  'device name' if peak_bw else
                  'unknown device: pass --peak-bw GB/s')
    else:
        peak_bw, bw_src = None, 'n/a on CPU'
    info['peak_bw'] = (f'{peak_bw:.0f} GB/s ({bw_src})' if peak_bw else
                       f'n/a ({bw_src})')
    info['timing'] = (f'median of up to {args.iters} calls after '
                      f'{args.warmup} warm-up, <= {args.max_seconds:g} s per '
                      'measurement, ' +
                      ('CUDA events' +
                       ('' if args.no_flush_l2 else ', L2 flushed')
                       if device.type == 'cuda' else 'time.perf_counter'))

    print('# selective_scan benchmark\n')
    for k, v in info.items():
        print(f'* {k}: {v}')
    print()
    print(md_table(['case', 'model', 'stage', 'input', 'shape', 'z',
                    'out', 'note'],
                   [[c.name, c.model, str(c.stage or '-'), c.image,
                     c.shape_str, 'yes' if c.has_z else 'no',
                     'fp32' if c.out_fp32 else args.dtype, c.note]
                    for c in cases]))
    print()
    sys.stdout.flush()

    by_name = {c.name: c for c in cases}
    doc = {'header': info, 'bytes_model': bytes_model.__doc__,
           'cases': [dict(c._asdict(), elems=c.elems) for c in cases],
           'correctness': None, 'results': []}

    def dump():
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(doc, f, indent=1)

    if not args.no_check and cases:
        small = min(cases, key=lambda c: c.elems * c.d_state)
        print(f'## Correctness spot check ({small.name}, forward, vs '
              f'{REFERENCE_BACKEND})\n', file=sys.stderr)
        chk = correctness_check(small, backends, dtype, device, args)
        doc['correctness'] = {'case': small.name, 'results': chk}
        print(f'## Correctness spot check: {small.name}, forward output, '
              f'max abs diff vs backend {REFERENCE_BACKEND!r}\n')
        print(md_table(['backend', 'max abs diff', 'max abs(out torch)',
                        'note'],
                       [[r['backend'], fmt(r.get('max_abs_diff'), '.3g'),
                         fmt(r.get('ref_max_abs'), '.3g'), r['note']]
                        for r in chk]))
        print()
        sys.stdout.flush()
        dump()

    timer = Timer(device, args.warmup, args.iters, args.max_seconds,
                  not args.no_flush_l2)
    rows = []
    t_start = time.perf_counter()
    for c in cases:
        inputs = make_inputs(c, dtype, device)
        for b in backends:
            r = measure(c, b, inputs, timer, device, args)
            rows.append(r)
            print(f'[{time.perf_counter() - t_start:7.1f}s] {c.name:22s} '
                  f'{b:14s} fwd {fmt(r["fwd_ms"])} ms  fwd+bwd '
                  f'{fmt(r["fwd_bwd_ms"])} ms  {r["note"]}',
                  file=sys.stderr, flush=True)
            derive(rows, by_name, in_bytes, peak_bw)
            doc['results'] = rows
            dump()
        del inputs
        if device.type == 'cuda':
            torch.cuda.empty_cache()

    derive(rows, by_name, in_bytes, peak_bw)
    print(f'## Results ({args.dtype}; times in ms; GB/s from the bytes '
          'model; "/ torch" = time or memory divided by the torch '
          "backend's; peak MiB = CUDA fwd+bwd peak above the inputs)\n")
    print(results_table(rows, device))
    print()
    print(targets_section(rows, by_name, device))
    print(f'\n_total benchmark time {time.perf_counter() - t_start:.1f} s_')
    doc['results'] = rows
    dump()
    return 0


if __name__ == '__main__':
    sys.exit(main())
