#!/usr/bin/env python
"""The prepared GPU run: the Triton kernels and every backbone on CUDA, and the
benchmark figures, within a time budget.

    python tools/dev/gpu_suite.py --out OUT --budget-s 480      # on the GPU
    python tools/dev/gpu_suite.py --out OUT --dry-run           # CPU, tiny sizes
    bash tools/dev/gpu_suite.sh OUT 480                         # the device machine

Steps, in this order; each task of a step runs in its own process (a hung
kernel, a crashed CUDA context or a slow compile ends that task only) under
its own timeout, and ``OUT/results.json`` and ``OUT/summary.md`` are
rewritten after every task:

1. ``env``        device, driver, CUDA, torch, triton versions;
2. ``ops``        ``pytest tests/ops`` file by file on CUDA with the compiled
                  kernels (``TRITON_INTERPRET`` unset), ``--maxfail`` per
                  file, every failure reported by file;
3. ``backbones``  every registered family, a small arch at an odd input:
                  forward and backward on CUDA (default backends: Triton)
                  against the CPU ``torch`` path with the same weights, in
                  fp32 and under bf16 autocast, max differences against the
                  kernel tests' tolerances;
4. ``kernels``    ``benchmarks/bench_selective_scan.py`` and
                  ``benchmarks/bench_fused.py`` on the VMamba-T stage-1 /
                  stage-2 cases at 1280x800 and Vim-S at 1248;
5. ``e2e``        ``benchmarks/bench_train_infer.py``: VMamba-T, Swin-T,
                  MLLA-T, BiFormer-T, Vim-S at 800x1280, batch 2, training
                  step and inference, peak memory, one process.

Budget: each task's timeout is its step's share of what is left, split among
the step's remaining tasks, so time a fast step does not use goes to the next;
a task that would get under ``--min-task-s`` is recorded as skipped.

``--dry-run`` runs the same steps on the CPU at tiny sizes with
``TRITON_INTERPRET=1`` (the "CUDA" side is then the Triton backend under the
interpreter), a few seconds a step; ``tests/test_gpu_suite.py`` runs it so
the script cannot rot while no GPU is lent.  Needs torch, mmengine, pytest
(triton for the kernels); no mmcv / mmdet.
"""
import argparse
import copy
import datetime
import json
import math
import os
import os.path as osp
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))

#: kernel tests' tolerances (mamba_ssm's): dtype -> (rtol, atol)
TOLERANCES = {'fp32': (6e-4, 2e-3), 'bf16': (3e-2, 5e-2)}

#: a small arch per family on the GPU (any family missing here: 'test')
SMALL_ARCH = {'VMamba': 'tiny', 'Vim': 'tiny', 'VisionRWKV': 'tiny', 'MLLA': 'tiny',
              'Swin': 'tiny', 'PVTv2': 'b0', 'BiFormer': 'tiny', 'PlainMamba': 'l1',
              'VisionRWKVAdapter': 'tiny'}
#: a backbone task's share of its step relative to the others' 1, after the
#: dry run's measured seconds (the interpreted scans): PlainMamba 144, VMamba
#: and Vim 63-89, the other families 9-17
BACKBONE_WEIGHT = {'PlainMamba': 8, 'VMamba': 5, 'Vim': 5}
#: (H, W) of the odd input of the backbone step
GPU_INPUT, DRY_INPUT = (161, 225), (37, 45)

#: step -> share of the budget
SHARES = {'env': 0.04, 'ops': 0.34, 'backbones': 0.17, 'kernels': 0.25, 'e2e': 0.20}
STEPS = list(SHARES)

#: benchmark cases of the kernels step
SCAN_CASES = 'vmamba-t_s1_1280x800,vmamba-t_s2_1280x800,vim-s_1248'
FUSED_CASES = 'ss2d vmamba-t s1 1280x800,ss2d vmamba-t s2 1280x800,bidir vim-s 1248'
DRY_SCAN_CASES = 'vmamba-t_s4_512x512'
DRY_FUSED_CASES = 'ss2d vmamba-t s4 64x64,bidir vim-s 64'

#: dry run: tests kept per ops file (tools/dev/_first_tests.py)
DRY_TESTS_PER_FILE = 2


# --------------------------------------------------------------------------
# running one task
# --------------------------------------------------------------------------


def run_task(cmd: List[str], timeout: float, log_path: str, env: Optional[dict] = None,
             title: str = '') -> dict:
    """Run ``cmd`` in its own process group with a wall-clock ``timeout``,
    appending its output to ``log_path``; on timeout the whole group gets
    SIGTERM, then SIGKILL.  Returns ``status`` ('ok', 'failed' or 'timeout'),
    ``rc``, ``seconds`` and the output's tail."""
    t0 = time.monotonic()
    with open(log_path, 'a') as log:
        log.write(f'\n===== {title or cmd[0]} (timeout {timeout:.0f} s)\n'
                  f'$ {" ".join(shlex.quote(c) for c in cmd)}\n')
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        status = None
        try:
            rc = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            status = 'timeout'
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = proc.poll()
        seconds = time.monotonic() - t0
        log.write(f'===== {status or "exit"} rc={rc} after {seconds:.1f} s\n')
    with open(log_path) as f:
        f.seek(start)
        out = f.read()
    if status is None:
        status = 'ok' if rc == 0 else 'failed'
    return {'status': status, 'rc': rc, 'seconds': round(seconds, 2), 'output': out}


def tail(text: str, n: int = 30) -> str:
    return '\n'.join(text.rstrip().splitlines()[-n:])


# --------------------------------------------------------------------------
# workers (run as `gpu_suite.py --worker NAME ...` in their own process)
# --------------------------------------------------------------------------


def worker_env(out_json: str):
    import platform
    import torch
    info = {'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
            'python': platform.python_version(), 'platform': platform.platform(),
            'torch': torch.__version__, 'cuda_runtime': torch.version.cuda,
            'cuda_available': torch.cuda.is_available(),
            'TRITON_INTERPRET': os.environ.get('TRITON_INTERPRET')}
    try:
        import triton
        info['triton'] = triton.__version__
    except Exception as e:  # noqa: BLE001 - report what is there
        info['triton'] = f'not importable: {type(e).__name__}: {e}'
    try:
        import mmengine
        info['mmengine'] = mmengine.__version__
    except Exception as e:  # noqa: BLE001
        info['mmengine'] = f'not importable: {type(e).__name__}: {e}'
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=f'{p.major}.{p.minor}',
                    multiprocessors=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version())
        try:
            q = subprocess.run(['nvidia-smi', '--query-gpu=driver_version,name,clocks.max.sm,'
                                'clocks.max.mem', '--format=csv,noheader'],
                               capture_output=True, text=True, timeout=20)
            info['nvidia_smi'] = q.stdout.strip() or q.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            info['nvidia_smi'] = f'not run: {type(e).__name__}'
    else:
        info['device'] = f'CPU ({os.cpu_count()} cores)'
    sys.path.insert(0, ROOT)
    from mmvisbackbones.ops.selective_scan import available_backends
    info['scan_backends'] = list(available_backends())
    for k, v in info.items():
        print(f'{k}: {v}')
    with open(out_json, 'w') as f:
        json.dump(info, f, indent=1)


def _flatten(outs) -> Dict[str, 'torch.Tensor']:  # noqa: F821
    return {f'out{i}': o for i, o in enumerate(outs)}


def _compare(got, ref, rtol, atol) -> dict:
    """One tensor: max abs diff, max |ref|, ``rel`` = max |d| / max |ref|
    (the error at the tensor's scale) and ``tol_ratio`` = max of |d| /
    (atol + rtol |ref|) (<= 1: within the kernel tests' tolerance)."""
    import torch
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    if got.shape != ref.shape:
        return {'error': f'shape {tuple(got.shape)} != {tuple(ref.shape)}'}
    if not got.numel():
        return {'max_abs_diff': 0.0, 'ref_max_abs': 0.0, 'rel': 0.0, 'tol_ratio': 0.0,
                'finite': True}
    d = (got - ref).abs()
    scale = float(ref.abs().max())
    return {'max_abs_diff': float(d.max()), 'ref_max_abs': scale,
            'rel': float(d.max()) / scale if scale else float(d.max()),
            'tol_ratio': float((d / (atol + rtol * ref.abs())).max()),
            'finite': bool(torch.isfinite(got).all())}


def _worst(items: Dict[str, dict]) -> dict:
    """Over a set of tensors: the worst ``tol_ratio`` and the worst ``rel``,
    each with its tensor's name; whether all are finite and all within."""
    bad = {k: v for k, v in items.items() if 'error' in v}
    if bad:
        k = next(iter(bad))
        return {'name': k, **bad[k]}

    def key(field):
        return lambda n: items[n][field] if items[n]['finite'] else math.inf
    kt, kr = max(items, key=key('tol_ratio')), max(items, key=key('rel'))
    return {'name': kt, 'tol_ratio': items[kt]['tol_ratio'],
            'max_abs_diff': items[kt]['max_abs_diff'],
            'worst_rel_name': kr, 'rel': items[kr]['rel'],
            'all_finite': all(v['finite'] for v in items.values()),
            'within_tol': all(v['finite'] and v['tol_ratio'] <= 1 for v in items.values()),
            'n_tensors': len(items)}


def _run_backbone(net, x, device, autocast_dtype=None):
    """Outputs and gradients (input and every parameter) of the loss
    ``sum_i <out_i, w_i>``, the ``w_i`` random but the same in every call
    (drawn from a generator seeded alike): no cancellation."""
    import torch
    x = x.detach().to(device).requires_grad_(True)
    net.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        outs = net(x)
    g = torch.Generator().manual_seed(1)
    loss = sum((o.float() * torch.randn(o.shape, generator=g).to(device)).sum() for o in outs)
    loss.backward()
    grads = {'input': x.grad}
    grads.update({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    return _flatten(outs), grads


def worker_backbone(family: str, arch: str, size, out_json: str, device_name: str,
                    backend: Optional[str]):
    """One family: CPU ``torch`` reference vs the device (its default
    backends, or ``backend``) in fp32 and under bf16 autocast."""
    import torch
    sys.path.insert(0, ROOT)
    import mmvisbackbones  # noqa: F401 - registers the families
    from mmvisbackbones import BACKBONES
    from mmvisbackbones.ops.selective_scan import BACKEND_ENV_VAR, resolve_backend
    device = torch.device(device_name)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    res = {'family': family, 'arch': arch, 'input': list(size), 'device': device_name}
    torch.manual_seed(0)
    if family not in BACKBONES:
        raise SystemExit(f'unknown backbone family {family!r}; registered: {sorted(BACKBONES)}')
    ref_net = BACKBONES[family](arch=arch).eval()  # eval: no drop path
    net = copy.deepcopy(ref_net).to(device).eval()
    res['params_m'] = round(sum(p.numel() for p in ref_net.parameters()) / 1e6, 3)
    x = torch.randn(1, 3, *size)

    def set_backend(name):
        if name is None:
            os.environ.pop(BACKEND_ENV_VAR, None)
        else:
            os.environ[BACKEND_ENV_VAR] = name

    set_backend('torch')
    t0 = time.perf_counter()
    ref_out, ref_grad = _run_backbone(ref_net, x, torch.device('cpu'))
    res['cpu_reference_s'] = round(time.perf_counter() - t0, 2)
    res['out_shapes'] = [list(o.shape) for o in ref_out.values()]
    set_backend(backend)
    res['device_scan_backend'] = resolve_backend(None, device)
    for tag, dt in (('fp32', None), ('bf16', torch.bfloat16)):
        rtol, atol = TOLERANCES[tag]
        t0 = time.perf_counter()
        try:
            out, grad = _run_backbone(net, x, device, dt)
            if device.type == 'cuda':
                torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - report per precision
            res[tag] = {'error': f'{type(e).__name__}: {str(e)[:300]}'}
            continue
        missing = sorted(set(ref_grad) - set(grad))
        res[tag] = {
            'seconds': round(time.perf_counter() - t0, 2), 'rtol': rtol, 'atol': atol,
            'outputs': _worst({k: _compare(out[k], ref_out[k], rtol, atol) for k in ref_out}),
            'grads': _worst({k: _compare(grad[k], ref_grad[k], rtol, atol)
                             for k in ref_grad if k in grad}),
            'grads_missing_on_device': missing[:10]}
    print(json.dumps(res, indent=1))
    with open(out_json, 'w') as f:
        json.dump(res, f, indent=1)
    ok = all('error' not in res[t] and res[t]['outputs'].get('all_finite')
             and res[t]['grads'].get('all_finite') and not res[t]['grads_missing_on_device']
             for t in ('fp32', 'bf16'))
    sys.exit(0 if ok else 1)


# --------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------


class Task(dict):
    """name, cmd, env, json (the file its result is read from), parse
    (how its output becomes a result) and weight (its share of the step's
    time relative to the others', default 1)."""


def base_env(dry: bool) -> dict:
    env = dict(os.environ)
    env['PYTHONUNBUFFERED'] = '1'
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    env.pop('MMVB_SCAN_BACKEND', None)
    if dry:
        env['TRITON_INTERPRET'] = '1'
        env.setdefault('OMP_NUM_THREADS', '2')
    else:
        env.pop('TRITON_INTERPRET', None)  # compiled kernels, never the interpreter
    return env


def registered_families() -> List[str]:
    sys.path.insert(0, ROOT)
    import mmvisbackbones  # noqa: F401
    from mmvisbackbones import BACKBONES
    return sorted(BACKBONES)


def ops_files() -> List[str]:
    d = osp.join(ROOT, 'tests', 'ops')
    return sorted(f'tests/ops/{f}' for f in os.listdir(d)
                  if f.startswith('test_') and f.endswith('.py'))


def parse_pytest(out: str) -> dict:
    counts = {}
    m = None
    for m in re.finditer(r'^=*\s*((?:\d+ \w+(?:, )?)+)(?: in [\d.]+s.*)?=*\s*$', out, re.M):
        pass
    if m:
        for n, what in re.findall(r'(\d+) (\w+)', m.group(1)):
            counts[what] = int(n)
    failed = re.findall(r'^(?:FAILED|ERROR) (\S+)(?: - (.*))?$', out, re.M)
    return {'counts': counts,
            'failures': [{'test': t, 'message': (msg or '')[:300]} for t, msg in failed]}


def build_tasks(step: str, args, tmp: str) -> List[Task]:
    py = args.python
    me = osp.abspath(__file__)
    env = base_env(args.dry_run)
    if step == 'env':
        j = osp.join(tmp, 'env.json')
        return [Task(name='env', cmd=[py, me, '--worker', 'env', '--json', j], env=env, json=j)]
    if step == 'ops':
        tasks = []
        for f in (args.ops_files or ops_files()):
            cmd = [py, '-m', 'pytest', f, '-q', '-p', 'no:cacheprovider', '-rfE',
                   f'--maxfail={args.maxfail}']
            e = dict(env)
            if args.dry_run:
                e['PYTHONPATH'] = os.pathsep.join([HERE, e['PYTHONPATH']])
                e['MMVB_FIRST_TESTS'] = str(DRY_TESTS_PER_FILE)
                cmd += ['-p', '_first_tests']
            tasks.append(Task(name=osp.basename(f), cmd=cmd, env=e, parse='pytest'))
        return tasks
    if step == 'backbones':
        size = DRY_INPUT if args.dry_run else GPU_INPUT
        device = 'cpu' if args.dry_run else 'cuda'
        # dry run: the device side is the Triton backend under the interpreter
        backend = 'triton' if args.dry_run else None
        tasks = []
        for fam in (args.families or registered_families()):
            arch = 'test' if args.dry_run else SMALL_ARCH.get(fam, 'test')
            j = osp.join(tmp, f'backbone_{fam}.json')
            cmd = [py, me, '--worker', 'backbone', '--family', fam, '--arch', arch,
                   '--size', f'{size[0]}x{size[1]}', '--device', device, '--json', j]
            if backend:
                cmd += ['--backend', backend]
            tasks.append(Task(name=fam, cmd=cmd, env=env, json=j,
                              weight=BACKBONE_WEIGHT.get(fam, 1)))
        return tasks
    if step == 'kernels':
        bench = osp.join(ROOT, 'benchmarks')
        j1, j2 = osp.join(tmp, 'bench_selective_scan.json'), osp.join(tmp, 'bench_fused.json')
        if args.dry_run:
            scan = [py, osp.join(bench, 'bench_selective_scan.py'), '--device', 'cpu',
                    '--cases', DRY_SCAN_CASES, '--backends', 'torch', '--iters', '2',
                    '--warmup', '1', '--max-seconds', '1', '--json', j1]
            fused = [py, osp.join(bench, 'bench_fused.py'), '--device', 'cpu', '--quick',
                     '--cases', DRY_FUSED_CASES, '--iters', '2', '--warmup', '1',
                     '--max-seconds', '1', '--json', j2]
        else:
            scan = [py, osp.join(bench, 'bench_selective_scan.py'), '--device', 'cuda',
                    '--cases', args.scan_cases, '--backends', 'triton,torch,torch_compile',
                    '--json', j1]
            fused = [py, osp.join(bench, 'bench_fused.py'), '--device', 'cuda',
                     '--cases', args.fused_cases, '--json', j2]
        return [Task(name='bench_selective_scan', cmd=scan, env=env, json=j1),
                Task(name='bench_fused', cmd=fused, env=env, json=j2)]
    if step == 'e2e':
        j = osp.join(tmp, 'bench_train_infer.json')
        cmd = [py, osp.join(ROOT, 'benchmarks', 'bench_train_infer.py'), '--json', j]
        if args.dry_run:
            cmd += ['--device', 'cpu', '--arch', 'test', '--size', '64x96', '--iters', '1',
                    '--warmup', '1', '--max-seconds', '1']
        else:
            cmd += ['--device', 'cuda', '--size', '800x1280', '--batch', '2']
        return [Task(name='bench_train_infer', cmd=cmd, env=env, json=j)]
    raise ValueError(f'unknown step {step!r}; steps are {STEPS}')


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------


def _g(d, *keys, fmt='{:.3g}'):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return '-'
        d = d[k]
    if isinstance(d, float):
        return fmt.format(d)
    return str(d)


def summary_md(doc: dict) -> str:
    s = doc['suite']
    lines = [f'# GPU suite{" (dry run, CPU)" if s["dry_run"] else ""}', '',
             f'- started {s["started"]}, budget {s["budget_s"]:.0f} s, '
             f'elapsed {s.get("elapsed_s", 0):.0f} s',
             f'- command: `{s["command"]}`', '']
    for step in doc['steps']:
        lines += [f'## {step["name"]}: {step["status"]} ({step["seconds"]:.0f} s)', '']
        tasks = step['tasks']
        if step['name'] == 'env' and tasks and tasks[0].get('result'):
            lines += [f'- {k}: {v}' for k, v in tasks[0]['result'].items()] + ['']
            continue
        if step['name'] == 'ops':
            lines += ['| file | status | s | passed | failed | skipped | errors |',
                      '|---|---|---|---|---|---|---|']
            fails = []
            for t in tasks:
                c = (t.get('result') or {}).get('counts', {})
                lines.append(f'| {t["name"]} | {t["status"]} | {t.get("seconds", 0):.0f} | '
                             f'{c.get("passed", 0)} | {c.get("failed", 0)} | '
                             f'{c.get("skipped", 0)} | {c.get("error", c.get("errors", 0))} |')
                fails += [(t['name'], f) for f in (t.get('result') or {}).get('failures', [])]
            lines.append('')
            lines += [f'- {n}: `{f["test"]}` {f["message"]}' for n, f in fails]
            lines.append('')
            continue
        if step['name'] == 'backbones':
            lines += ['| family | arch | status | scan backend | precision | out max abs | '
                      'out rel | out / tol | grad rel (worst) | grad / tol (worst) | within tol |',
                      '|---|---|---|---|---|---|---|---|---|---|---|']
            for t in tasks:
                r = t.get('result') or {}
                for tag in ('fp32', 'bf16'):
                    p = r.get(tag, {})
                    if 'error' in p or not p:
                        lines.append(f'| {t["name"]} | {r.get("arch", "-")} | {t["status"]} | '
                                     f'{r.get("device_scan_backend", "-")} | {tag} | '
                                     f'{p.get("error", "no result")[:80]} | | | | | |')
                        continue
                    o, g = p['outputs'], p['grads']
                    within = o.get('within_tol') and g.get('within_tol')
                    lines.append(
                        f'| {t["name"]} | {r["arch"]} | {t["status"]} | '
                        f'{r["device_scan_backend"]} | {tag} | {_g(o, "max_abs_diff")} | '
                        f'{_g(o, "rel")} | {_g(o, "tol_ratio")} | {_g(g, "rel")} '
                        f'({g.get("worst_rel_name")}) | {_g(g, "tol_ratio")} ({g.get("name")}) | '
                        f'{"yes" if within else "no"} |')
            lines += ['', 'Reference: the CPU `torch` path in fp32 with the same weights. '
                      '"rel" = max |d| / max |ref| of a tensor; "/ tol" = max |d| / (atol + '
                      'rtol |ref|) with the kernel tests\' tolerances (fp32 rtol 6e-4 / atol '
                      '2e-3, bf16 3e-2 / 5e-2), <= 1 is within. Gradients: the input\'s and '
                      'every parameter\'s. A whole backbone compounds the per-op error, and a '
                      'weight gradient sums over every pixel, so bf16 "/ tol" > 1 there is '
                      'information, not a failure by itself.', '']
            continue
        for t in tasks:  # benchmarks: their own markdown tables
            lines += [f'### {t["name"]}: {t["status"]} ({t.get("seconds", 0):.0f} s)', '']
            out = t.get('output', '')
            keep, prev_table = [], None
            for ln in out.splitlines():
                if not ln.startswith(('|', 'input ', 'Target', 'Upstream', '## ')):
                    continue
                is_table = ln.startswith('|')
                if keep and is_table != prev_table or (ln.startswith('## ') and keep):
                    keep.append('')  # markdown needs a blank line around a table
                keep.append(ln)
                prev_table = is_table
            lines += ['\n'.join(keep) if keep else '```\n' + tail(out, 15) + '\n```', '']
    return '\n'.join(lines) + '\n'


def write_report(doc: dict, out_dir: str):
    doc['suite']['elapsed_s'] = round(time.monotonic() - doc['suite']['_t0'], 1)
    clean = json.loads(json.dumps(doc, default=str))
    clean['suite'].pop('_t0', None)
    for step in clean['steps']:  # the whole output is in suite.log
        for t in step['tasks']:
            t['output_tail'] = tail(t.pop('output', ''), 40)
    tmp = osp.join(out_dir, '.results.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(clean, f, indent=1)
    os.replace(tmp, osp.join(out_dir, 'results.json'))
    with open(osp.join(out_dir, 'summary.md'), 'w') as f:
        f.write(summary_md(doc))


def run_suite(args) -> dict:
    os.makedirs(args.out, exist_ok=True)
    log = osp.join(args.out, 'suite.log')
    open(log, 'w').close()
    t0 = time.monotonic()
    deadline = t0 + args.budget_s
    doc = {'suite': {'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                     'budget_s': args.budget_s, 'dry_run': args.dry_run, '_t0': t0,
                     'command': ' '.join(shlex.quote(a) for a in sys.argv),
                     'steps': args.steps}, 'steps': []}
    steps = args.steps
    tmp = tempfile.mkdtemp(prefix='mmvb-gpu-suite-')
    for i, step in enumerate(steps):
        rec = {'name': step, 'status': 'running', 'seconds': 0.0, 'tasks': []}
        doc['steps'].append(rec)
        s0 = time.monotonic()
        try:
            tasks = build_tasks(step, args, tmp)
        except Exception as e:  # noqa: BLE001 - e.g. the package does not import
            rec.update(status='failed', error=f'{type(e).__name__}: {e}')
            write_report(doc, args.out)
            continue
        share_left = sum(SHARES[s] for s in steps[i:])
        step_budget = max(deadline - time.monotonic(), 0) * SHARES[step] / share_left
        step_end = time.monotonic() + step_budget
        for k, task in enumerate(tasks):
            left = step_end - time.monotonic()
            weights = [later.get('weight', 1) for later in tasks[k:]]
            timeout = min(left * weights[0] / sum(weights), args.max_task_s)
            # a task may use what the step's earlier tasks left over
            t = {'name': task['name'], 'cmd': ' '.join(shlex.quote(c) for c in task['cmd'])}
            if timeout < args.min_task_s:
                t.update(status='skipped', reason=f'budget: {timeout:.0f} s left for it')
                rec['tasks'].append(t)
                write_report(doc, args.out)
                continue
            print(f'[gpu_suite {time.monotonic() - t0:6.0f}s] {step}/{task["name"]} '
                  f'(timeout {timeout:.0f} s)', flush=True)
            r = run_task(task['cmd'], timeout, log, task['env'], f'{step}/{task["name"]}')
            t.update(r)
            if task.get('parse') == 'pytest':
                t['result'] = parse_pytest(r['output'])
            elif task.get('json') and osp.exists(task['json']):
                with open(task['json']) as f:
                    t['result'] = json.load(f)
            print(f'[gpu_suite {time.monotonic() - t0:6.0f}s] {step}/{task["name"]}: '
                  f'{t["status"]} ({t["seconds"]:.0f} s)', flush=True)
            rec['tasks'].append(t)
            rec['seconds'] = round(time.monotonic() - s0, 1)
            write_report(doc, args.out)
        statuses = {t['status'] for t in rec['tasks']}
        rec['status'] = ('ok' if statuses == {'ok'} else
                         'skipped' if statuses == {'skipped'} else 'partial')
        rec['seconds'] = round(time.monotonic() - s0, 1)
        write_report(doc, args.out)
    doc['suite']['status'] = ('ok' if all(s['status'] == 'ok' for s in doc['steps'])
                              else 'incomplete')
    write_report(doc, args.out)
    print(f'[gpu_suite] {doc["suite"]["status"]} in {time.monotonic() - t0:.0f} s; '
          f'{osp.join(args.out, "summary.md")}', flush=True)
    return doc


def parse_size(s: str):
    h, w = (int(v) for v in s.lower().split('x'))
    return h, w


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--out', help='output folder: results.json, summary.md, suite.log')
    p.add_argument('--budget-s', type=float, default=480.0,
                   help='wall-clock budget of the whole run (default 480)')
    p.add_argument('--dry-run', action='store_true',
                   help='CPU, tiny sizes, TRITON_INTERPRET=1: checks the script itself')
    p.add_argument('--steps', default=','.join(STEPS),
                   help=f'comma-separated subset of {",".join(STEPS)} (their order is kept)')
    p.add_argument('--families', help='comma-separated backbone families (default: all registered)')
    p.add_argument('--ops-files', help='comma-separated test files (default: all of tests/ops)')
    p.add_argument('--maxfail', type=int, default=5, help='pytest --maxfail per ops file')
    p.add_argument('--scan-cases', default=SCAN_CASES)
    p.add_argument('--fused-cases', default=FUSED_CASES)
    p.add_argument('--min-task-s', type=float, default=5.0,
                   help='skip a task that would get less time than this')
    p.add_argument('--max-task-s', type=float, default=math.inf,
                   help='cap of any one task\'s timeout')
    p.add_argument('--python', default=sys.executable, help=argparse.SUPPRESS)
    # worker mode (internal)
    p.add_argument('--worker', choices=['env', 'backbone'], help=argparse.SUPPRESS)
    p.add_argument('--json', help=argparse.SUPPRESS)
    p.add_argument('--family', help=argparse.SUPPRESS)
    p.add_argument('--arch', help=argparse.SUPPRESS)
    p.add_argument('--size', type=parse_size, help=argparse.SUPPRESS)
    p.add_argument('--device', default='cuda', help=argparse.SUPPRESS)
    p.add_argument('--backend', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == 'env':
        return worker_env(args.json)
    if args.worker == 'backbone':
        return worker_backbone(args.family, args.arch, args.size, args.json, args.device,
                               args.backend)
    if not args.out:
        p.error('--out is required')
    steps = [s.strip() for s in args.steps.split(',') if s.strip()]
    unknown = [s for s in steps if s not in SHARES]
    if unknown:
        p.error(f'unknown step(s) {unknown}; steps are {STEPS}')
    args.steps = [s for s in STEPS if s in steps]
    args.families = [f.strip() for f in args.families.split(',')] if args.families else None
    args.ops_files = ([f.strip() for f in args.ops_files.split(',')] if args.ops_files
                      else None)
    if not args.dry_run:
        import torch
        if not torch.cuda.is_available():
            p.error('CUDA is not available: pass --dry-run to check the script on the CPU')
    doc = run_suite(args)
    return 0 if doc['suite']['status'] == 'ok' else 1


if __name__ == '__main__':
    sys.exit(main())
