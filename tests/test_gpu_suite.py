"""The prepared GPU run (tools/dev/gpu_suite.py): its CPU dry run goes through
every step and its results say what they should, so the script cannot rot
while no GPU is lent; the budget and timeouts hold."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(ROOT, 'tools', 'dev', 'gpu_suite.py')


def _load():
    spec = importlib.util.spec_from_file_location('gpu_suite', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gs = _load()


def run_suite(out, *args, timeout=900):
    env = dict(os.environ)
    env.pop('MMVB_SCAN_BACKEND', None)
    return subprocess.run([sys.executable, SCRIPT, '--out', str(out), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_suite_dry')
    t0 = time.monotonic()
    # the budget is split into per-task timeouts; the Triton interpreter's
    # VMamba step took 54 s on a slow day of this 2-core host (38 s was its
    # share of 600 s), and PlainMamba's four-group scan took 144 s there
    # alone, so the dry run gets room (it finishes in ~7 min)
    p = run_suite(out, '--dry-run', '--budget-s', '2400', timeout=2700)
    seconds = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(out / 'results.json') as f:
        doc = json.load(f)
    return out, doc, seconds


def steps_by_name(doc):
    return {s['name']: s for s in doc['steps']}


def test_dry_run_goes_through_every_step_in_order(dry_run):
    out, doc, seconds = dry_run
    assert [s['name'] for s in doc['steps']] == ['env', 'ops', 'backbones', 'kernels', 'e2e']
    assert all(s['status'] == 'ok' for s in doc['steps']), [
        (s['name'], s['status']) for s in doc['steps']]
    assert doc['suite']['status'] == 'ok' and doc['suite']['dry_run'] is True
    # what comes back from the device machine: few files, no sub-folders
    assert sorted(os.listdir(out)) == ['results.json', 'suite.log', 'summary.md']
    summary = (out / 'summary.md').read_text()
    for head in ('## env: ok', '## ops: ok', '## backbones: ok', '## kernels: ok', '## e2e: ok'):
        assert head in summary
    log = (out / 'suite.log').read_text()
    assert log.count('===== exit rc=0') == sum(len(s['tasks']) for s in doc['steps'])


def test_env_step_reports_versions(dry_run):
    env = steps_by_name(dry_run[1])['env']['tasks'][0]['result']
    assert env['torch'] == torch.__version__
    assert env['TRITON_INTERPRET'] == '1'  # dry run: interpreted kernels
    for key in ('triton', 'mmengine', 'python', 'device', 'scan_backends'):
        assert key in env


def test_ops_step_runs_every_ops_file(dry_run):
    tasks = steps_by_name(dry_run[1])['ops']['tasks']
    files = sorted(f for f in os.listdir(osp.join(ROOT, 'tests', 'ops'))
                   if f.startswith('test_') and f.endswith('.py'))
    assert [t['name'] for t in tasks] == files
    for t in tasks:
        counts = t['result']['counts']
        assert counts.get('passed') == gs.DRY_TESTS_PER_FILE, (t['name'], counts)
        assert not counts.get('failed') and not t['result']['failures'], t['name']


def test_backbones_step_covers_every_family(dry_run):
    from mmvisbackbones import BACKBONES
    tasks = steps_by_name(dry_run[1])['backbones']['tasks']
    assert sorted(t['name'] for t in tasks) == sorted(BACKBONES)
    for t in tasks:
        r = t['result']
        assert r['device_scan_backend'] == 'triton', t['name']  # interpreted kernels
        assert r['input'] == list(gs.DRY_INPUT)
        for tag in ('fp32', 'bf16'):
            assert r[tag]['outputs']['n_tensors'] == 4, (t['name'], tag)
            assert r[tag]['grads']['n_tensors'] > 10, (t['name'], tag)
            assert r[tag]['outputs']['all_finite'] and r[tag]['grads']['all_finite']
            assert r[tag]['grads_missing_on_device'] == []
        # fp32: the Triton kernels agree with the torch path within the kernel
        # tests' tolerance, through the whole backbone, values and gradients
        assert r['fp32']['outputs']['within_tol'], (t['name'], r['fp32']['outputs'])
        assert r['fp32']['grads']['within_tol'], (t['name'], r['fp32']['grads'])
        # bf16 autocast: close at the outputs' scale, not bitwise
        assert 0 < r['bf16']['outputs']['rel'] < 0.1, (t['name'], r['bf16']['outputs'])


def test_kernels_and_e2e_steps_write_their_figures(dry_run):
    steps = steps_by_name(dry_run[1])
    scan, fused = (t['result'] for t in steps['kernels']['tasks'])
    assert [r['case'] for r in scan['results']] == [gs.DRY_SCAN_CASES]
    assert all(r['fwd_ms'] > 0 and r['fwd_bwd_ms'] > 0 for r in scan['results'])
    assert [r['case'] for r in fused['results']] == gs.DRY_FUSED_CASES.split(',')
    assert all(r['speedup_fwd'] > 0 and 'error' not in r for r in fused['results'])
    e2e = steps['e2e']['tasks'][0]['result']
    assert [r['model'] for r in e2e['results']] == ['Swin-T', 'VMamba-T', 'MLLA-T',
                                                   'BiFormer-T', 'Vim-S']
    assert e2e['anchor'] == 'Swin-T' and e2e['arch_override'] == 'test'
    for r in e2e['results']:
        assert r['train_ms'] > 0 and r['infer_img_s'] > 0, r


def alive(pid):
    """Running (a zombie left for an init that does not reap is dead)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def test_timeout_ends_the_whole_process_group(tmp_path):
    pid_file = tmp_path / 'child.pid'
    code = ('import subprocess, sys, time; '
            'c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]); '
            f'open({str(pid_file)!r}, "w").write(str(c.pid)); time.sleep(120)')
    t0 = time.monotonic()
    r = gs.run_task([sys.executable, '-c', code], 3, str(tmp_path / 'log'), title='hang')
    assert r['status'] == 'timeout' and time.monotonic() - t0 < 30
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not alive(child)  # the grandchild was killed with its group
    assert 'hang (timeout 3 s)' in (tmp_path / 'log').read_text()


def test_budget_too_small_skips_and_says_why(tmp_path):
    p = run_suite(tmp_path, '--dry-run', '--budget-s', '2', '--steps', 'env,e2e')
    assert p.returncode == 1
    doc = json.loads((tmp_path / 'results.json').read_text())
    assert doc['suite']['status'] == 'incomplete'
    for s in doc['steps']:
        assert s['status'] == 'skipped'
        assert all(t['reason'].startswith('budget:') for t in s['tasks'])


def test_a_failing_task_is_reported_and_the_run_goes_on(tmp_path):
    p = run_suite(tmp_path, '--dry-run', '--steps', 'backbones,e2e', '--families',
                  'NoSuchFamily', '--budget-s', '300')
    assert p.returncode == 1
    steps = steps_by_name(json.loads((tmp_path / 'results.json').read_text()))
    task = steps['backbones']['tasks'][0]
    assert task['status'] == 'failed' and 'unknown backbone family' in task['output_tail']
    assert steps['e2e']['status'] == 'ok'


def test_parse_pytest_counts_and_failures():
    out = ('..F.s\nFAILED tests/ops/test_x.py::test_a[1] - AssertionError: boom\n'
           'ERROR tests/ops/test_x.py::test_b\n'
           '=== 1 failed, 3 passed, 1 skipped, 1 error in 2.31s ===\n')
    r = gs.parse_pytest(out)
    assert r['counts'] == {'failed': 1, 'passed': 3, 'skipped': 1, 'error': 1}
    assert [f['test'] for f in r['failures']] == ['tests/ops/test_x.py::test_a[1]',
                                                 'tests/ops/test_x.py::test_b']
    assert r['failures'][0]['message'] == 'AssertionError: boom'
    assert gs.parse_pytest('2 passed in 0.5s\n')['counts'] == {'passed': 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message without CUDA')
def test_without_cuda_the_real_run_says_to_dry_run(tmp_path):
    p = run_suite(tmp_path, '--budget-s', '10')
    assert p.returncode == 2 and '--dry-run' in p.stderr
