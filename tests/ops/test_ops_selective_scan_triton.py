"""Triton selective-scan kernels against the naive reference: forward and
every gradient, on CUDA when present, else under TRITON_INTERPRET=1 on the
CPU (tests/conftest.py), so shapes stay tiny."""
import os

import pytest
import torch

from mmvisbackbones.ops.selective_scan import selective_scan, selective_scan_naive
from mmvisbackbones.ops.selective_scan import triton_scan
from test_ops_selective_scan import (FP32_TOL, LOWP_TOL, NAMES, assert_match, make_inputs,
                                     run_with_grads)

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
pytestmark = pytest.mark.skipif(
    not triton_scan.HAS_TRITON or (DEVICE == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1'),
    reason='needs triton and either CUDA or TRITON_INTERPRET=1')


def on_device(ins):
    return {k: (v.to(DEVICE) if v is not None else None) for k, v in ins.items()}


def triton_fn(**kw):
    return selective_scan(**kw, backend='triton')


def compare(ins, tol=FP32_TOL, with_state=False, **kw):
    ref = run_with_grads(selective_scan_naive, ins, with_state=with_state, **kw)
    got = run_with_grads(triton_fn, on_device(ins), with_state=with_state, **kw)
    got = (got[0].cpu(), None if got[1] is None else got[1].cpu(),
           {k: v.cpu() for k, v in got[2].items()})
    assert_match(got, ref, tol, with_state=with_state)


@pytest.mark.parametrize('extras', [True, False], ids=['extras', 'plain'])
@pytest.mark.parametrize('layout', ['G1', 'G2', 'BC3d'])
@pytest.mark.parametrize('L', [1, 7, 63, 257])
def test_matches_naive_fp32(L, layout, extras):
    ins = make_inputs(L=L, G=2 if layout == 'G2' else 1, bc3d=layout == 'BC3d', D=extras,
                      z=extras, bias=extras, softplus=extras, seed=L)
    compare(ins, delta_softplus=extras)


@pytest.mark.parametrize('D,z,bias,softplus', [(True, False, False, False),
                                               (False, True, False, True),
                                               (False, False, True, False),
                                               (True, True, True, True)])
def test_option_combinations(D, z, bias, softplus):
    ins = make_inputs(L=37, G=2, D=D, z=z, bias=bias, softplus=softplus, seed=5)
    compare(ins, delta_softplus=softplus)


@pytest.mark.parametrize('Dm,G,N', [(24, 3, 2), (12, 2, 5), (6, 1, 16), (5, 5, 1)])
def test_tiles_and_groups(Dm, G, N):
    """Several channel tiles per group, odd group sizes, a state size that is
    not a power of two, one channel per group."""
    ins = make_inputs(Bt=2, Dm=Dm, N=N, L=70, G=G, seed=Dm + N)
    compare(ins, delta_softplus=True)


def test_last_state_and_its_gradient():
    ins = make_inputs(L=100, G=2, seed=9)
    compare(ins, with_state=True, delta_softplus=True)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('L', [7, 63])
def test_low_precision_inputs(dtype, L):
    """fp16/bf16 inputs, fp32 state: compared with the reference run on the
    same low-precision inputs; outputs and grads keep the input dtypes."""
    ins = make_inputs(L=L, G=2, dtype=dtype, seed=3)
    compare(ins, tol=LOWP_TOL, delta_softplus=True)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float32])
def test_out_fp32(dtype):
    ins = on_device(make_inputs(L=20, dtype=dtype, seed=4))
    out = selective_scan(**ins, delta_softplus=True, out_fp32=True, backend='triton')
    assert out.dtype == torch.float32
    ref = selective_scan_naive(**{k: (v.cpu() if v is not None else None)
                                  for k, v in ins.items()}, delta_softplus=True, out_fp32=True)
    torch.testing.assert_close(out.cpu(), ref, **(FP32_TOL if dtype == torch.float32
                                                   else LOWP_TOL))


def test_large_decay_is_stable():
    ins = make_inputs(L=257, G=2, softplus=True, seed=11)
    ins['delta'] = torch.full_like(ins['delta'], 50.0)
    ins['A'] = torch.full_like(ins['A'], -10.0)
    ins['A'][:, 0] = -1e-3
    ref = run_with_grads(selective_scan_naive, ins, delta_softplus=True)
    got = run_with_grads(triton_fn, on_device(ins), delta_softplus=True)
    assert torch.isfinite(got[0]).all()
    assert all(torch.isfinite(g).all() for g in got[2].values())
    assert_match((got[0].cpu(), None, {k: v.cpu() for k, v in got[2].items()}), ref, FP32_TOL)


def test_saves_inputs_and_chunk_states_only():
    """Activation memory O(Bt*Dm*L): nothing of size Bt*Dm*L*N is kept."""
    Bt, Dm, N, L = 2, 4, 8, 200
    ins = on_device(make_inputs(Bt=Bt, Dm=Dm, N=N, L=L, seed=2))
    leaves = {k: v.requires_grad_(True) for k, v in ins.items() if v is not None}
    out = selective_scan(**ins, delta_softplus=True, backend='triton')
    saved = out.grad_fn.saved_tensors
    inputs = {id(v) for v in leaves.values()}
    extra = [t for t in saved if t is not None and id(t) not in inputs]
    assert sum(t.numel() for t in extra) <= Bt * Dm * N * -(-L // 16)
    assert all(t.numel() < Bt * Dm * N * L for t in extra)


def test_no_grad_saves_nothing():
    ins = on_device(make_inputs(L=20, seed=2))
    with torch.no_grad():
        out = selective_scan(**ins, delta_softplus=True, backend='triton')
    assert out.grad_fn is None


def test_float64_is_refused_clearly():
    ins = on_device(make_inputs(L=5, dtype=torch.float64))
    with pytest.raises(TypeError, match="'triton' supports float32.*float64"):
        selective_scan(**ins, backend='triton')



@pytest.mark.parametrize('Bt', [1, 2])
def test_views_and_odd_stride_grad(Bt):
    """``u`` and ``z`` that are channel slices of a transposed ``(B, L, 2D)``
    projection (Mamba's in_proj), and at batch 1 a contiguous gradient whose
    size-1 dimension has a non-canonical stride (as autograd hands it to
    Vim's scan): the backward once rejected that stride, which it never
    uses."""
    torch.manual_seed(3)
    Dm, L, N = 6, 19, 3
    base = torch.randn(Bt, L, 2 * Dm)
    rest0 = dict(delta=torch.randn(Bt, Dm, L) * 0.5, A=-torch.exp(torch.randn(Dm, N)),
                 B=torch.randn(Bt, 1, N, L), C=torch.randn(Bt, 1, N, L), D=torch.randn(Dm),
                 delta_bias=torch.randn(Dm) * 0.3)
    grad = torch.randn(Bt * Dm * L)
    grad = grad.as_strided((Bt, Dm, L), (L if Bt == 1 else Dm * L, L, 1))
    assert grad.is_contiguous()

    def run(fn, device):
        leaf = base.to(device).requires_grad_(True)
        u, z = leaf.transpose(1, 2)[:, :Dm], leaf.transpose(1, 2)[:, Dm:]
        rest = {k: v.to(device).requires_grad_(True) for k, v in rest0.items()}
        y = fn(u=u, z=z, delta_softplus=True, **rest)
        y.float().backward(grad.to(device))
        return y.detach().cpu(), {'uz': leaf.grad.cpu(),
                                  **{k: v.grad.cpu() for k, v in rest.items()}}

    ref = run(selective_scan_naive, 'cpu')
    got = run(triton_fn, DEVICE)
    torch.testing.assert_close(got[0], ref[0], **FP32_TOL)
    for k in ref[1]:
        torch.testing.assert_close(got[1][k], ref[1][k], **FP32_TOL, msg=lambda m: f'{k}: {m}')
