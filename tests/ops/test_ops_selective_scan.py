import itertools
import os
import subprocess
import sys

import pytest
import torch

from mmvisbackbones.ops import selective_scan as public_selective_scan
from mmvisbackbones.ops.selective_scan import (BACKEND_ENV_VAR, DEFAULT_CHUNK_SIZE,
                                               available_backends,
                                               default_chunk_size,
                                               resolve_backend, selective_scan,
                                               selective_scan_chunked,
                                               selective_scan_naive)
from mmvisbackbones.ops.selective_scan import _BACKENDS, _Backend

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
FP32_TOL = dict(rtol=6e-4, atol=2e-3)
LOWP_TOL = dict(rtol=3e-2, atol=5e-2)


def make_inputs(Bt=2, Dm=4, N=3, L=7, G=1, bc3d=False, D=True, z=True,
                bias=True, softplus=True, dtype=torch.float32, seed=0):
    """Realistic inputs: A = -exp(randn); delta ~ randn*0.5 before softplus,
    or a positive step size in (0.05, 0.55) when no softplus is applied."""
    torch.manual_seed(seed)
    ins = {}
    ins['u'] = torch.randn(Bt, Dm, L, dtype=dtype)
    if softplus:
        ins['delta'] = (torch.randn(Bt, Dm, L) * 0.5).to(dtype)
    else:
        ins['delta'] = (torch.rand(Bt, Dm, L) * 0.5 + 0.05).to(dtype)
    fp = torch.float64 if dtype == torch.float64 else torch.float32
    ins['A'] = -torch.exp(torch.randn(Dm, N, dtype=fp))
    shape = (Bt, N, L) if bc3d else (Bt, G, N, L)
    ins['B'] = torch.randn(*shape, dtype=dtype)
    ins['C'] = torch.randn(*shape, dtype=dtype)
    ins['D'] = torch.randn(Dm, dtype=fp) if D else None
    ins['z'] = torch.randn(Bt, Dm, L, dtype=dtype) if z else None
    if bias:
        ins['delta_bias'] = (torch.randn(Dm, dtype=fp) * 0.5 if softplus else
                             torch.rand(Dm, dtype=fp) * 0.1)
    else:
        ins['delta_bias'] = None
    return ins


def run_with_grads(fn, ins, with_state=False, seed=1, **kw):
    """Forward + backward of a random projection of the outputs.

    Returns (out, last_state or None, {name: grad})."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in ins.items()
              if v is not None}
    args = {k: leaves.get(k) for k in NAMES}
    res = fn(**args, return_last_state=with_state, **kw)
    out, state = res if with_state else (res, None)
    torch.manual_seed(seed)
    loss = (out.float() * torch.randn(out.shape)).sum()
    if with_state:
        loss = loss + (state.float() * torch.randn(state.shape)).sum()
    loss.backward()
    return out.detach(), (None if state is None else state.detach()), {
        k: v.grad
        for k, v in leaves.items()
    }


def assert_match(a, b, tol, with_state=False):
    out_a, st_a, g_a = a
    out_b, st_b, g_b = b
    assert out_a.dtype == out_b.dtype
    torch.testing.assert_close(out_a, out_b, **tol)
    if with_state:
        torch.testing.assert_close(st_a, st_b, **tol)
    assert g_a.keys() == g_b.keys()
    for k in g_a:
        assert g_a[k] is not None, k
        assert g_a[k].dtype == g_b[k].dtype, k
        torch.testing.assert_close(g_a[k], g_b[k], **tol, msg=lambda m: f'grad {k}: {m}')


# ---------------------------------------------------------------- accuracy
@pytest.mark.parametrize('chunk_size', [None, 16])
@pytest.mark.parametrize('extras', [True, False], ids=['extras', 'plain'])
@pytest.mark.parametrize('layout', ['G1', 'G2', 'BC3d'])
@pytest.mark.parametrize('L', [1, 7, 63, 257])
def test_chunked_matches_naive_fp32(L, layout, extras, chunk_size):
    ins = make_inputs(L=L, G=2 if layout == 'G2' else 1,
                      bc3d=layout == 'BC3d', D=extras, z=extras, bias=extras,
                      softplus=extras)
    kw = dict(delta_softplus=extras)
    ref = run_with_grads(selective_scan_naive, ins, **kw)
    got = run_with_grads(selective_scan_chunked, ins, chunk_size=chunk_size,
                         **kw)
    assert got[0].shape == (2, 4, L)
    assert_match(got, ref, FP32_TOL)


@pytest.mark.parametrize('D,z,bias,softplus',
                         list(itertools.product([False, True], repeat=4)))
def test_chunked_option_combinations(D, z, bias, softplus):
    ins = make_inputs(L=20, G=2, D=D, z=z, bias=bias, softplus=softplus,
                      seed=3)
    ref = run_with_grads(selective_scan_naive, ins, with_state=True,
                         delta_softplus=softplus)
    got = run_with_grads(selective_scan_chunked, ins, with_state=True,
                         delta_softplus=softplus, chunk_size=8)
    assert_match(got, ref, FP32_TOL, with_state=True)


@pytest.mark.parametrize('chunk_size', [1, 3, 8, 13, 64, 1000])
def test_chunk_size_invariance(chunk_size):
    ins = make_inputs(L=13, N=4, G=2, seed=4)
    ref = run_with_grads(selective_scan_naive, ins, with_state=True,
                         delta_softplus=True)
    got = run_with_grads(selective_scan_chunked, ins, with_state=True,
                         delta_softplus=True, chunk_size=chunk_size)
    assert_match(got, ref, FP32_TOL, with_state=True)


def test_default_chunk_size():
    for n in (1, 4, 16, 64):
        assert default_chunk_size(n) == DEFAULT_CHUNK_SIZE


@pytest.mark.parametrize('dim', [-1, -3, 1, 2])
def test_shift_and_carry_along_any_axis(monkeypatch, dim):
    # the eager shift (a pad) and the traced one (a concatenation of clamped
    # slices) give the same tensor, shifts longer than the axis included,
    # and the carry along any axis is the one along the last
    from mmvisbackbones.ops.selective_scan import chunked
    x = torch.randn(2, 5, 3, 4)
    n = x.shape[dim]
    for k, fill, reverse in itertools.product((1, 2, n - 1, n, n + 3), (0.0, 1.0), (False, True)):
        want = torch.full_like(x, fill).movedim(dim, -1)
        src = x.movedim(dim, -1)
        if k < n:
            if reverse:
                want[..., :n - k] = src[..., k:]
            else:
                want[..., k:] = src[..., :n - k]
        want = want.movedim(-1, dim)
        assert torch.equal(chunked._shift(x, k, fill, reverse, dim), want), (k, reverse)
        with monkeypatch.context() as m:
            m.setattr(chunked, '_tracing', lambda: True)
            assert torch.equal(chunked._shift(x, k, fill, reverse, dim), want), (k, reverse)
    decay = torch.rand(2, 5, 3, 4)
    for reverse in (False, True):
        want = chunked._carry_scan(decay.movedim(dim, -1), x.movedim(dim, -1), reverse)
        got = chunked._carry_scan(decay, x, reverse, dim=dim)
        torch.testing.assert_close(got, want.movedim(-1, dim))
        # against the recurrence itself, step by step
        e, d = x.movedim(dim, 0), decay.movedim(dim, 0)
        s, carries = torch.zeros_like(e[0]), [None] * n
        for c in (range(n - 1, -1, -1) if reverse else range(n)):
            carries[c] = s
            s = d[c] * s + e[c]
        torch.testing.assert_close(got, torch.stack(carries).movedim(0, dim))


def test_naive_matches_closed_form():
    """The reference itself: a 2-step scan written out by hand."""
    ins = make_inputs(Bt=1, Dm=2, N=3, L=2, G=1, seed=5)
    u, d, A = ins['u'][0], ins['delta'][0], ins['A']
    B, C, D, z, b = (ins['B'][0, 0], ins['C'][0, 0], ins['D'], ins['z'][0],
                     ins['delta_bias'])
    dt = torch.nn.functional.softplus(d + b[:, None])             # (Dm, L)
    h1 = dt[:, 0, None] * B[:, 0] * u[:, 0, None]                 # (Dm, N)
    h2 = torch.exp(dt[:, 1, None] * A) * h1 + dt[:, 1, None] * B[:, 1] * u[:, 1, None]
    y = torch.stack([(h1 * C[:, 0]).sum(-1), (h2 * C[:, 1]).sum(-1)], -1)
    y = (y + D[:, None] * u) * torch.nn.functional.silu(z)
    out, last = selective_scan_naive(**ins, delta_softplus=True,
                                     return_last_state=True)
    torch.testing.assert_close(out[0], y)
    torch.testing.assert_close(last[0], h2)


def test_groups_use_channel_blocks():
    """Channel d must use group d // (Dm // G): G=2 equals running the two
    channel halves separately with their own B/C."""
    ins = make_inputs(Dm=4, G=2, L=9, seed=6)
    out = selective_scan_chunked(**ins, delta_softplus=True, chunk_size=4)
    for g, sl in enumerate((slice(0, 2), slice(2, 4))):
        part = {k: (v if v is None else
                    v[:, sl] if k in ('u', 'delta', 'z') else
                    v[sl] if k in ('A', 'D', 'delta_bias') else v[:, g])
                for k, v in ins.items()}
        ref = selective_scan_naive(**part, delta_softplus=True)
        torch.testing.assert_close(out[:, sl], ref, **FP32_TOL)


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize('L', [7, 63])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype, L):
    ins = make_inputs(L=L, G=2, dtype=dtype, seed=7)
    ref = run_with_grads(selective_scan_naive, ins, delta_softplus=True)
    got = run_with_grads(selective_scan_chunked, ins, delta_softplus=True,
                         chunk_size=16)
    assert got[0].dtype == dtype
    for k in ('u', 'delta', 'B', 'C', 'z'):
        assert got[2][k].dtype == dtype, k
    for k in ('A', 'D', 'delta_bias'):
        assert got[2][k].dtype == torch.float32, k
    assert_match(got, ref, LOWP_TOL)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16,
                                   torch.float32])
@pytest.mark.parametrize('fn', [selective_scan_naive, selective_scan_chunked])
def test_out_fp32(fn, dtype):
    ins = make_inputs(L=9, dtype=dtype, seed=8)
    out = fn(**ins, delta_softplus=True, out_fp32=True)
    assert out.dtype == torch.float32
    # computed in fp32 on the same inputs: equals the fp32 reference run on
    # the upcast inputs
    ref = selective_scan_naive(**{k: None if v is None else v.float()
                                  for k, v in ins.items()},
                               delta_softplus=True)
    torch.testing.assert_close(out, ref, **FP32_TOL)
    assert fn(**ins, delta_softplus=True).dtype == dtype


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float32,
                                   torch.float64])
def test_return_last_state(dtype):
    ins = make_inputs(L=37, G=2, dtype=dtype, seed=9)
    out, st = selective_scan_chunked(**ins, delta_softplus=True,
                                     return_last_state=True, chunk_size=16)
    ref_out, ref_st = selective_scan_naive(**ins, delta_softplus=True,
                                           return_last_state=True)
    expected_state_dtype = (torch.float64 if dtype == torch.float64 else
                            torch.float32)
    assert st.shape == (2, 4, 3)
    assert st.dtype == ref_st.dtype == expected_state_dtype
    torch.testing.assert_close(st, ref_st, **FP32_TOL)
    torch.testing.assert_close(out, ref_out,
                               **(LOWP_TOL if dtype == torch.bfloat16 else
                                  FP32_TOL))
    # the last state is exactly the state after the first L' steps when the
    # sequence is cut there
    cut = {k: (v[..., :20] if v is not None and v.shape[-1] == 37 else v)
           for k, v in ins.items()}
    _, st20 = selective_scan_chunked(**cut, delta_softplus=True,
                                     return_last_state=True, chunk_size=16)
    _, ref20 = selective_scan_naive(**cut, delta_softplus=True,
                                    return_last_state=True)
    torch.testing.assert_close(st20, ref20, **FP32_TOL)


# ---------------------------------------------------------------- gradcheck
@pytest.mark.parametrize('cfg', [
    dict(G=2, bc3d=False, D=True, z=True, bias=True, softplus=True),
    dict(G=1, bc3d=True, D=False, z=False, bias=False, softplus=False),
    dict(G=1, bc3d=False, D=True, z=False, bias=True, softplus=False),
], ids=['all', 'minimal', 'D-bias'])
def test_gradcheck_fp64(cfg):
    softplus = cfg.pop('softplus')
    ins = make_inputs(Bt=1, Dm=4, N=2, L=5, dtype=torch.float64, seed=10,
                      softplus=softplus, **cfg)
    names = [k for k in NAMES if ins[k] is not None]
    leaves = [ins[k].clone().requires_grad_(True) for k in names]

    def f(*xs):
        out, st = selective_scan_chunked(**dict(zip(names, xs)),
                                         delta_softplus=softplus,
                                         return_last_state=True, chunk_size=2)
        assert out.dtype == st.dtype == torch.float64
        return out, st

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- stability
@pytest.mark.parametrize('softplus', [False, True])
def test_large_decay_is_stable(softplus):
    """delta*|A| ~ 500 per step: exp(cumsum) would underflow to 0 and the
    divide-based formulation would produce inf/nan; the log-step scan stays
    finite."""
    ins = make_inputs(L=257, G=2, softplus=softplus, seed=11)
    ins['delta'] = torch.full_like(ins['delta'], 50.0)
    ins['A'] = torch.full_like(ins['A'], -10.0)
    ins['A'][:, 0] = -1e-3  # plus a slowly decaying state
    ref = run_with_grads(selective_scan_naive, ins, with_state=True,
                         delta_softplus=softplus)
    got = run_with_grads(selective_scan_chunked, ins, with_state=True,
                         delta_softplus=softplus)
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1]).all()
    for k, g in got[2].items():
        assert torch.isfinite(g).all(), k
    assert_match(got, ref, FP32_TOL, with_state=True)


# ---------------------------------------------------------------- memory
def test_saves_only_inputs_and_chunk_states():
    ins = make_inputs(Bt=2, Dm=4, N=3, L=100, seed=12)
    leaves = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
    out = selective_scan_chunked(**leaves, delta_softplus=True, chunk_size=16)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    n_chunks = 7  # ceil(100 / 16)
    budget = sum(v.numel() for v in ins.values()) + (n_chunks - 1) * 2 * 4 * 3
    assert sum(t.numel() for t in saved) <= budget
    # and nothing of size Bt*Dm*L*N
    assert all(t.numel() < 2 * 4 * 100 * 3 for t in saved)


# ---------------------------------------------------------------- dispatch
def test_dispatch_defaults(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    assert resolve_backend() == 'torch'
    assert resolve_backend(device=torch.device('cpu')) == 'torch'
    # triton is a test dependency: CUDA tensors go to the Triton kernels
    assert resolve_backend(device='cuda') == 'triton'
    assert available_backends() == ('naive', 'torch', 'triton')


def _spy(monkeypatch, name):
    calls = []
    orig = _BACKENDS[name]

    def fn(*args):
        calls.append(args)
        return orig.fn(*args)

    monkeypatch.setitem(_BACKENDS, name, orig._replace(fn=fn))
    return calls


def test_dispatch_env_and_argument(monkeypatch):
    ins = make_inputs(L=9, seed=13)
    naive_calls = _spy(monkeypatch, 'naive')
    torch_calls = _spy(monkeypatch, 'torch')

    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    out_default = selective_scan(**ins, delta_softplus=True)
    assert (len(naive_calls), len(torch_calls)) == (0, 1)

    monkeypatch.setenv(BACKEND_ENV_VAR, ' Naive ')
    assert resolve_backend() == 'naive'
    out_env = selective_scan(**ins, delta_softplus=True)
    assert (len(naive_calls), len(torch_calls)) == (1, 1)

    # the argument wins over the environment variable
    out_arg = selective_scan(**ins, delta_softplus=True, backend='torch',
                             chunk_size=4)
    assert (len(naive_calls), len(torch_calls)) == (1, 2)
    assert torch_calls[-1][-1] == 4  # chunk_size forwarded

    torch.testing.assert_close(out_env, out_default, **FP32_TOL)
    torch.testing.assert_close(out_arg, out_default, **FP32_TOL)
    # the package-level export is the dispatcher
    assert public_selective_scan is selective_scan


def test_dispatch_new_backend_is_one_entry(monkeypatch):
    monkeypatch.setitem(_BACKENDS, 'fake',
                        _Backend(lambda *a: 'fake-result', True, 'test'))
    assert 'fake' in available_backends()
    assert selective_scan(*[None] * 5, backend='fake') == 'fake-result'


def test_dispatch_unknown_backend(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    ins = make_inputs(L=3)
    with pytest.raises(ValueError, match=r"unknown backend 'cuda_fast'.*"
                       r"\['naive', 'torch', 'triton'\]"):
        selective_scan(**ins, backend='cuda_fast')
    monkeypatch.setenv(BACKEND_ENV_VAR, 'nope')
    with pytest.raises(ValueError, match=BACKEND_ENV_VAR):
        selective_scan(**ins)


def test_dispatch_triton_on_cpu_is_a_clear_error(monkeypatch):
    """Without TRITON_INTERPRET=1, CPU tensors cannot go to the kernels."""
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    ins = make_inputs(L=3)
    with pytest.raises(RuntimeError, match=r"'triton' runs on CUDA.*'torch'"):
        selective_scan(**ins, backend='triton')
    monkeypatch.setenv(BACKEND_ENV_VAR, 'triton')
    with pytest.raises(RuntimeError, match='runs on CUDA'):
        selective_scan(**ins)


# ---------------------------------------------------------------- errors
def _bad(**changes):
    def build():
        ins = make_inputs(Bt=2, Dm=4, N=3, L=7, G=2)
        ins.update({k: v() if callable(v) else v for k, v in changes.items()})
        return ins
    return build


BAD_INPUTS = [
    ('u_2d', _bad(u=lambda: torch.randn(4, 7)), ValueError, r'`u`.*3-D'),
    ('u_int', _bad(u=lambda: torch.ones(2, 4, 7, dtype=torch.int64)),
     TypeError, r'`u`.*floating.*int64'),
    ('u_list', _bad(u=[[1.0]]), TypeError, r'`u`.*torch.Tensor'),
    ('delta_shape', _bad(delta=lambda: torch.randn(2, 4, 6)), ValueError,
     r'`delta`.*\(2, 4, 7\).*\(2, 4, 6\)'),
    ('A_1d', _bad(A=lambda: -torch.rand(4)), ValueError, r'`A`.*2-D'),
    ('A_rows', _bad(A=lambda: -torch.rand(5, 3)), ValueError,
     r'`A`.*Dm=4.*\(5, 3\)'),
    ('A_complex', _bad(A=lambda: -torch.rand(4, 3, dtype=torch.complex64)),
     TypeError, r'`A`.*complex'),
    ('B_L', _bad(B=lambda: torch.randn(2, 2, 3, 6)), ValueError,
     r'`B`.*L=7.*\(2, 2, 3, 6\)'),
    ('C_N', _bad(C=lambda: torch.randn(2, 2, 5, 7)), ValueError,
     r'`C`.*N=3'),
    ('B_5d', _bad(B=lambda: torch.randn(2, 1, 2, 3, 7)), ValueError,
     r'`B`.*4-D.*5-D'),
    ('groups_div', _bad(B=lambda: torch.randn(2, 3, 3, 7),
                        C=lambda: torch.randn(2, 3, 3, 7)), ValueError,
     r'`B`.*G=3.*Dm=4.*divisible'),
    ('groups_BC', _bad(C=lambda: torch.randn(2, 4, 3, 7)), ValueError,
     r'`B` and `C`.*G=2.*G=4'),
    ('D_shape', _bad(D=lambda: torch.randn(4, 1)), ValueError,
     r'`D`.*\(4,\).*\(4, 1\)'),
    ('bias_shape', _bad(delta_bias=lambda: torch.randn(3)), ValueError,
     r'`delta_bias`.*\(4,\).*\(3,\)'),
    ('z_shape', _bad(z=lambda: torch.randn(2, 4, 8)), ValueError, r'`z`'),
    ('z_int', _bad(z=lambda: torch.ones(2, 4, 7, dtype=torch.int32)),
     TypeError, r'`z`.*int32'),
]


@pytest.mark.parametrize('fn', [selective_scan, selective_scan_naive,
                                selective_scan_chunked])
@pytest.mark.parametrize('build,exc,msg', [b[1:] for b in BAD_INPUTS],
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs(fn, build, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(**build())


@pytest.mark.parametrize('chunk_size,exc', [(0, ValueError), (-3, ValueError),
                                            (2.5, TypeError)])
def test_bad_chunk_size(chunk_size, exc):
    with pytest.raises(exc, match='chunk_size'):
        selective_scan_chunked(**make_inputs(), chunk_size=chunk_size)


def test_ops_import_without_openmmlab():
    """mmvisbackbones.ops imports with torch alone (no mmcv/mmengine/...)."""
    pkg_dir = os.path.join(os.path.dirname(__file__), '..', '..',
                           'mmvisbackbones')
    code = (
        'import sys, types\n'
        "pkg = types.ModuleType('mmvisbackbones')\n"
        f'pkg.__path__ = [{os.path.abspath(pkg_dir)!r}]\n'
        "sys.modules['mmvisbackbones'] = pkg\n"
        'from mmvisbackbones.ops import selective_scan, cross_scan, '
        'cross_merge\n'
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('mmcv', 'mmengine', 'mmdet', 'mmseg', 'mmpretrain')]\n"
        'assert not bad, bad\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------- export
def test_onnx_export_is_exact_at_other_lengths(tmp_path):
    """The traced scan has no length-dependent Python control flow: one graph
    exported at L=20 matches the reference at L=7, 64 and 301 (chunks of 16:
    one partial chunk, exact chunks, many chunks)."""
    onnxruntime = pytest.importorskip('onnxruntime')

    class Scan(torch.nn.Module):
        def forward(self, u, delta, A, B, C, D, z, delta_bias):
            return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias,
                                          delta_softplus=True, chunk_size=16)

    names = list(NAMES)
    ins = make_inputs(L=20, G=2, seed=21)
    path = str(tmp_path / 'scan.onnx')
    dyn = {k: {2: 'L'} for k in ('u', 'delta', 'z')}
    dyn.update({k: {3: 'L'} for k in ('B', 'C')})
    torch.onnx.export(Scan(), tuple(ins[k] for k in names), path, input_names=names,
                      output_names=['out'], dynamic_axes=dyn, opset_version=17, dynamo=False)
    sess = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for L in (7, 64, 301):
        case = make_inputs(L=L, G=2, seed=22 + L)
        got = sess.run(None, {k: case[k].numpy() for k in names})[0]
        ref = selective_scan_naive(**case, delta_softplus=True)
        torch.testing.assert_close(torch.from_numpy(got), ref, **FP32_TOL)
