"""Bidirectional WKV (Vision-RWKV): the 'torch' and 'triton' backends against
the O(T^2) 'naive' reference -- output and the gradients of w, u, k and v --
plus the dispatcher and the input checks.  Triton runs on CUDA when present,
else under TRITON_INTERPRET=1 on the CPU (tests/conftest.py): tiny shapes."""
import os

import pytest
import torch

import mmvisbackbones.ops.wkv as wkv
from mmvisbackbones.ops.selective_scan import BACKEND_ENV_VAR
from mmvisbackbones.ops.wkv import bi_wkv, bi_wkv_naive, bi_wkv_torch
from mmvisbackbones.ops.wkv.triton_wkv import HAS_TRITON

FP32_TOL = dict(rtol=6e-4, atol=2e-3)
LOWP_TOL = dict(rtol=3e-2, atol=5e-2)
FP64_TOL = dict(rtol=1e-9, atol=1e-10)
NAMES = ('w', 'u', 'k', 'v')
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
needs_triton = pytest.mark.skipif(
    not HAS_TRITON or (DEVICE == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1'),
    reason='needs triton and either CUDA or TRITON_INTERPRET=1')


def make_inputs(B=2, T=7, C=3, dtype=torch.float32, seed=0, w=None, k_scale=1.0,
                realistic=False):
    """k, v ~ randn (k times ``k_scale``), w, u fp32 (C,). ``realistic``:
    Vision-RWKV's init range, spatial_decay in [-5, 3] and spatial_first
    ~ log(0.3), both divided by T; else w, u ~ randn (both signs), w scaled
    down for long sequences so that |w| T stays below ~50: exponents of
    size |w| T cost fp32 about |w| T * 1e-7 of relative accuracy (the naive
    reference as much as the others); EXTREMES tests large |w| T."""
    g = torch.Generator().manual_seed(seed)
    if realistic:
        ww = (torch.rand(C, generator=g) * 8 - 5) / T
        uu = (torch.full((C, ), -1.2) + torch.randn(C, generator=g) * 0.5) / T
    else:
        ww = torch.randn(C, generator=g) * min(1.0, 16.0 / T)
        uu = torch.randn(C, generator=g)
    if w is not None:
        ww = torch.as_tensor(w, dtype=torch.float32).expand(C).clone()
    fp = torch.float64 if dtype == torch.float64 else torch.float32
    k = (torch.randn(B, T, C, generator=g) * k_scale).to(dtype)
    v = torch.randn(B, T, C, generator=g).to(dtype)
    return dict(w=ww.to(fp), u=uu.to(fp), k=k, v=v)


def run_with_grads(fn, ins, seed=1, **kw):
    """Output and the gradients of a random projection of it."""
    leaves = {n: ins[n].detach().clone().requires_grad_(True) for n in NAMES}
    out = fn(**leaves, **kw)
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    (out.double() * proj.to(out.device, torch.float64)).sum().backward()
    return out, {n: leaves[n].grad for n in NAMES}


def on(ins, device=DEVICE, dtype=None):
    return {n: t.to(device, dtype) if dtype is not None else t.to(device) for n, t in ins.items()}


def assert_match(got, ref, tol, ins):
    out, grads = got
    assert out.dtype == ins['v'].dtype and out.shape == ins['k'].shape
    torch.testing.assert_close(out.cpu().double(), ref[0].cpu().double(), **tol)
    for n in NAMES:
        assert grads[n].dtype == ins[n].dtype, n
        torch.testing.assert_close(grads[n].cpu().double(), ref[1][n].cpu().double(), **tol,
                                   msg=lambda m, n=n: f'grad of {n}: {m}')


def reference(ins):
    """Naive reference in float64 from the same values."""
    return run_with_grads(bi_wkv_naive, on(ins, 'cpu', torch.float64))


def compare(ins, backend, tol=FP32_TOL, **kw):
    dev = DEVICE if backend == 'triton' else 'cpu'
    got = run_with_grads(bi_wkv, on(ins, dev), backend=backend, **kw)
    assert_match(got, reference(ins), tol, ins)
    return got


def triton_fn(w, u, k, v):
    return bi_wkv(w, u, k, v, backend='triton')


# ----------------------------------------------------------------- naive

def test_naive_is_the_formula():
    """The reference against the formula written out with Python loops."""
    ins = make_inputs(B=1, T=6, C=2, dtype=torch.float64, seed=3)
    w, u, k, v = (ins[n] for n in NAMES)
    y = bi_wkv_naive(w, u, k, v)
    for c in range(2):
        for t in range(6):
            num = den = 0.0
            for i in range(6):
                e = u[c] + k[0, t, c] if i == t else k[0, i, c] - (abs(t - i) - 1) * w[c]
                num, den = num + torch.exp(e) * v[0, i, c], den + torch.exp(e)
            assert torch.isclose(y[0, t, c], num / den, rtol=1e-12)


# ----------------------------------------------------------------- torch

@pytest.mark.parametrize('T', [1, 2, 3, 7, 64, 257, 1000])
def test_torch_matches_naive_fp32(T):
    compare(make_inputs(B=2, T=T, C=4, seed=T), 'torch')


def test_torch_long_sequence():
    """T ~ 2000 with Vision-RWKV's parameter range, and with w ~ randn."""
    compare(make_inputs(B=1, T=1999, C=2, seed=5, realistic=True), 'torch')
    compare(make_inputs(B=1, T=1999, C=2, seed=6), 'torch')


@pytest.mark.parametrize('chunk', [1, 3, 16, 64])
def test_torch_fp64_any_chunk(chunk):
    ins = make_inputs(B=2, T=50, C=3, dtype=torch.float64, seed=chunk)
    got = run_with_grads(bi_wkv_torch, ins, chunk=chunk)
    assert_match(got, reference(ins), FP64_TOL, ins)


def test_torch_gradcheck_fp64():
    ins = make_inputs(B=2, T=5, C=3, dtype=torch.float64, seed=2)
    args = tuple(ins[n].clone().requires_grad_(True) for n in NAMES)
    assert torch.autograd.gradcheck(lambda *a: bi_wkv(*a, backend='torch'), args)
    args = tuple(ins[n].clone().requires_grad_(True) for n in NAMES)
    assert torch.autograd.gradcheck(lambda *a: bi_wkv_torch(*a, chunk=2), args)


def test_torch_grad_of_some_inputs_only():
    ins = make_inputs(T=20, seed=4)
    ref = reference(ins)
    k = ins['k'].clone().requires_grad_(True)
    out = bi_wkv(ins['w'], ins['u'], k, ins['v'], backend='torch')
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.double() * proj.double()).sum().backward()
    torch.testing.assert_close(k.grad.double(), ref[1]['k'], **FP32_TOL)


# ------------------------------------------------------- both backends

BACKENDS = ['torch', pytest.param('triton', marks=needs_triton)]


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('backend', BACKENDS)
def test_low_precision_inputs(backend, dtype):
    """fp16/bf16 k, v (fp32 w, u) against the reference on the same inputs;
    output and grads keep the input dtypes."""
    ins = make_inputs(B=2, T=37, C=3, dtype=dtype, seed=7)
    dev = DEVICE if backend == 'triton' else 'cpu'
    got = run_with_grads(bi_wkv, on(ins, dev), backend=backend)
    ref = run_with_grads(bi_wkv_naive, ins)
    assert_match(got, ref, LOWP_TOL, ins)


def test_low_precision_w_and_u_torch():
    ins = make_inputs(B=1, T=9, C=3, dtype=torch.bfloat16, seed=8)
    ins['w'], ins['u'] = ins['w'].half(), ins['u'].bfloat16()
    got = run_with_grads(bi_wkv, ins, backend='torch')
    assert_match(got, run_with_grads(bi_wkv_naive, ins), LOWP_TOL, ins)


EXTREMES = {
    'negative_w': dict(w=-3.0),          # far tokens weigh exp(3 * 62) more
    'large_positive_w': dict(w=30.0),    # only the neighbours count
    'large_k': dict(k_scale=20.0),       # k up to about +-60
    'mixed': dict(k_scale=13.0),         # randn w, both signs, large k
}


@pytest.mark.parametrize('case', list(EXTREMES))
@pytest.mark.parametrize('backend', BACKENDS)
def test_extreme_values_are_stable(backend, case):
    T = 64 if backend == 'triton' else 300
    ins = make_inputs(B=1, T=T, C=3, seed=11, **EXTREMES[case])
    if case == 'large_k':
        ins['k'][0, :, 0] = 40.0 * torch.sign(ins['k'][0, :, 0])   # exactly +-40
    got = compare(ins, backend)
    assert torch.isfinite(got[0]).all()
    assert all(torch.isfinite(g).all() for g in got[1].values())


@pytest.mark.parametrize('backend', ['naive'] + BACKENDS)
def test_single_token_is_the_value(backend):
    """T = 1: y = v exactly; dv = g and no gradient reaches w, u or k."""
    ins = on(make_inputs(B=3, T=1, C=5, seed=12), DEVICE if backend == 'triton' else 'cpu')
    out, grads = run_with_grads(bi_wkv, ins, backend=backend)
    torch.testing.assert_close(out, ins['v'], rtol=1e-6, atol=1e-6)
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(grads['v'].cpu(), proj, rtol=1e-6, atol=1e-6)
    for n in ('w', 'u', 'k'):
        assert grads[n].abs().max() < 1e-6, n


@pytest.mark.parametrize('backend', ['naive'] + BACKENDS)
def test_reversal_and_shift_symmetry(backend):
    """Reversing the sequence reverses the output; adding a constant to k
    (softmax shift) changes nothing."""
    ins = on(make_inputs(B=2, T=23, C=3, seed=13), DEVICE if backend == 'triton' else 'cpu')
    w, u, k, v = (ins[n] for n in NAMES)
    y = bi_wkv(w, u, k, v, backend=backend)
    y_rev = bi_wkv(w, u, k.flip(1), v.flip(1), backend=backend)
    torch.testing.assert_close(y_rev.flip(1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bi_wkv(w, u, k + 25.0, v, backend=backend), y, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize('shift', [-100.0, 100.0])
@pytest.mark.parametrize('backend', BACKENDS)
def test_shift_of_k_changes_nothing(backend, shift):
    """y is a softmax over k: k + c gives the same output and gradients.
    exp(+-100) is out of fp32 range, so every exponent must be stabilised
    (forward and backward)."""
    dev = DEVICE if backend == 'triton' else 'cpu'
    ins = on(make_inputs(B=2, T=40, C=3, seed=19, w=-0.5), dev)
    ref = run_with_grads(bi_wkv, ins, backend=backend)
    got = run_with_grads(bi_wkv, dict(ins, k=ins['k'] + shift), backend=backend)
    assert_match(got, ref, FP32_TOL, ins)


@pytest.mark.parametrize('backend', BACKENDS)
def test_realistic_parameters(backend):
    """spatial_decay / T and spatial_first / T as Vision-RWKV passes them."""
    compare(make_inputs(B=2, T=49, C=6, seed=14, realistic=True), backend)


@pytest.mark.parametrize('backend', BACKENDS)
def test_non_contiguous_inputs(backend):
    ins = make_inputs(B=2, T=19, C=4, seed=15)
    dev = DEVICE if backend == 'triton' else 'cpu'
    base = on(ins, dev)
    nc = dict(base)
    nc['k'] = base['k'].transpose(1, 2).contiguous().transpose(1, 2)
    nc['v'] = torch.stack([base['v'], -base['v']], -1)[..., 0]
    assert not nc['k'].is_contiguous() and not nc['v'].is_contiguous()
    got = run_with_grads(bi_wkv, nc, backend=backend)
    assert_match(got, reference(ins), FP32_TOL, ins)


@pytest.mark.parametrize('backend', BACKENDS)
def test_no_grad_and_empty_batch(backend):
    ins = on(make_inputs(B=1, T=5, C=3, seed=16), DEVICE if backend == 'triton' else 'cpu')
    leaves = {n: t.requires_grad_(True) for n, t in ins.items()}
    with torch.no_grad():
        assert bi_wkv(**leaves, backend=backend).grad_fn is None
    empty = dict(leaves, k=leaves['k'][:0], v=leaves['v'][:0])
    out = bi_wkv(**empty, backend=backend)
    assert out.shape == (0, 5, 3)


# ---------------------------------------------------------------- triton

@needs_triton
@pytest.mark.parametrize('T', [1, 2, 7, 64, 257])
def test_triton_matches_naive_fp32(T):
    compare(make_inputs(B=2, T=T, C=3, seed=T), 'triton')


@needs_triton
def test_triton_several_channel_tiles():
    """C = 40: full tiles of 16 channels and a masked one."""
    compare(make_inputs(B=1, T=18, C=40, seed=17), 'triton')


@needs_triton
def test_triton_saves_inputs_only():
    ins = on(make_inputs(B=1, T=20, C=3, seed=18))
    leaves = {n: t.requires_grad_(True) for n, t in ins.items()}
    out = bi_wkv(**leaves, backend='triton')
    assert sum(t.numel() for t in out.grad_fn.saved_tensors) == 2 * 3 + 2 * 20 * 3


@needs_triton
def test_triton_refuses_float64():
    ins = on(make_inputs(T=4, dtype=torch.float64))
    with pytest.raises(TypeError, match="'triton' supports float32.*float64"):
        bi_wkv(**ins, backend='triton')


@pytest.mark.skipif(not HAS_TRITON, reason='needs triton')
def test_triton_refuses_cpu_tensors_without_interpreter(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(RuntimeError, match="runs on CUDA tensors.*backend='torch'"):
        bi_wkv(**make_inputs(T=4), backend='triton')


# ------------------------------------------------------------ dispatcher

def _spy(monkeypatch, names=('naive', 'torch', 'triton')):
    calls = []
    for n in names:
        monkeypatch.setitem(wkv._BACKENDS, n, lambda *a, n=n: calls.append(n) or a[3])
    return calls


def test_default_backend_and_env_var(monkeypatch):
    calls = _spy(monkeypatch)
    ins = make_inputs(T=4)
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    bi_wkv(**ins)
    assert calls == ['torch']                       # CPU default
    monkeypatch.setenv(BACKEND_ENV_VAR, ' Naive ')
    bi_wkv(**ins)
    assert calls[-1] == 'naive'
    bi_wkv(**ins, backend='torch')                  # the argument wins
    assert calls[-1] == 'torch'
    assert wkv.resolve_backend(None, torch.device('cuda')) == 'naive'
    monkeypatch.delenv(BACKEND_ENV_VAR)
    assert wkv.resolve_backend(None, torch.device('cuda')) == (
        'triton' if HAS_TRITON else 'torch')


def test_public_export():
    from mmvisbackbones import ops
    assert ops.bi_wkv is bi_wkv and 'bi_wkv' in ops.__all__
    assert set(wkv.available_backends()) >= {'naive', 'torch'}


def test_backend_errors(monkeypatch):
    ins = make_inputs(T=4)
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=r"bi_wkv: unknown backend 'cuda'.*'naive'.*'torch'"):
        bi_wkv(**ins, backend='cuda')
    with pytest.raises(TypeError, match='bi_wkv: argument `backend` must be a str'):
        bi_wkv(**ins, backend=1)
    monkeypatch.setenv(BACKEND_ENV_VAR, 'fast')
    with pytest.raises(ValueError, match=f"'fast'.*{BACKEND_ENV_VAR}"):
        bi_wkv(**ins)


def _bad(name, value, **kw):
    ins = make_inputs(B=2, T=4, C=3, **kw)
    ins[name] = value
    return ins


BAD_INPUTS = [
    ('k', lambda: _bad('k', [[1.0]]), TypeError, '`k` must be a torch.Tensor'),
    ('k', lambda: _bad('k', torch.ones(2, 4, 3, dtype=torch.int64)), TypeError,
     '`k` must have a real floating dtype'),
    ('k', lambda: _bad('k', torch.ones(2, 4, 3, dtype=torch.complex64)), TypeError,
     '`k` must have a real floating dtype'),
    ('k', lambda: _bad('k', torch.ones(4, 3)), ValueError, r'`k` must be 3-D \(B, T, C\)'),
    ('T', lambda: dict(_bad('k', torch.ones(2, 0, 3)), v=torch.ones(2, 0, 3)), ValueError,
     'T=0'),
    ('v', lambda: _bad('v', torch.ones(2, 5, 3)), ValueError,
     r'`v` must have the shape of `k` \(B, T, C\)=\(2, 4, 3\), got \(2, 5, 3\)'),
    ('v', lambda: _bad('v', torch.ones(2, 4, 3, dtype=torch.int32)), TypeError,
     '`v` must have a real floating dtype'),
    ('w', lambda: _bad('w', torch.ones(4)), ValueError,
     r'`w` must have shape \(C,\)=\(3,\).*got \(4,\)'),
    ('w', lambda: _bad('w', 0.5), TypeError, '`w` must be a torch.Tensor'),
    ('u', lambda: _bad('u', torch.ones(1, 3)), ValueError, r'`u` must have shape \(C,\)'),
    ('u', lambda: _bad('u', torch.ones(3, dtype=torch.int32)), TypeError,
     '`u` must have a real floating dtype'),
    ('device', lambda: _bad('w', torch.ones(3, device='meta')), ValueError,
     '`w` is on meta but `k` is on cpu'),
]


@pytest.mark.parametrize('backend', ['naive', 'torch', 'triton'])
@pytest.mark.parametrize('case', BAD_INPUTS, ids=[f'{c[0]}-{i}' for i, c in
                                                  enumerate(BAD_INPUTS)])
def test_bad_inputs(case, backend):
    _, make, exc, msg = case
    with pytest.raises(exc, match=msg):
        bi_wkv(**make(), backend=backend)
    if backend != 'triton':
        fn = bi_wkv_naive if backend == 'naive' else bi_wkv_torch
        with pytest.raises(exc, match=msg):
            fn(**make())


def test_torch_bad_chunk():
    with pytest.raises(ValueError, match='`chunk` must be a positive int'):
        bi_wkv_torch(**make_inputs(T=4), chunk=0)


# ---------------------------------------------------------------- export
def test_onnx_export_is_exact_at_other_lengths(tmp_path):
    """The traced WKV has no length-dependent Python control flow (its chunk
    is the constant TRACE_CHUNK, its carry scan a fixed number of rounds):
    one graph exported at T=20 matches the reference at T=7, 64 and 301
    (one partial chunk, exact chunks, 19 chunks with a ragged last one),
    with decays of both signs."""
    onnxruntime = pytest.importorskip('onnxruntime')
    from mmvisbackbones.ops.wkv import torch_wkv
    assert torch_wkv.TRACE_CHUNK == 16  # the lengths below are chosen for it

    class WKV(torch.nn.Module):
        def forward(self, w, u, k, v):
            return bi_wkv_torch(w, u, k, v)

    ins = make_inputs(T=20, C=8, seed=31, realistic=True)
    path = str(tmp_path / 'wkv.onnx')
    dyn = {k: {1: 'T'} for k in ('k', 'v')}
    torch.onnx.export(WKV(), tuple(ins[k] for k in NAMES), path, input_names=list(NAMES),
                      output_names=['y'], dynamic_axes=dyn, opset_version=17, dynamo=False)
    sess = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for T in (7, 64, 301):
        case = make_inputs(T=T, C=8, seed=32 + T, realistic=True)
        assert (case['w'] < 0).any() and (case['w'] > 0).any()
        got = sess.run(None, {k: case[k].numpy() for k in NAMES})[0]
        torch.testing.assert_close(torch.from_numpy(got), bi_wkv_naive(**case), **FP32_TOL)
