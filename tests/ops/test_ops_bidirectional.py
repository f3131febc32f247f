"""Bidirectional scan (Vim): the fused Triton kernel and the torch path
against flips + two reference scans."""
import os

import pytest
import torch

from mmvisbackbones.ops import bidirectional_scan
from mmvisbackbones.ops.bidirectional import bidirectional_scan_naive
from mmvisbackbones.ops.selective_scan import selective_scan_naive, triton_scan

FP32_TOL = dict(rtol=6e-4, atol=2e-3)
LOWP_TOL = dict(rtol=3e-2, atol=5e-2)
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
CAN_TRITON = triton_scan.HAS_TRITON and (DEVICE == 'cuda'
                                         or os.environ.get('TRITON_INTERPRET') == '1')
BACKENDS = ['torch'] + (['triton'] if CAN_TRITON else [])
NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def make(Bt=2, P=3, L=7, N=2, D=True, z=True, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return dict(u=torch.randn(Bt, 2 * P, L, dtype=dtype),
                delta=(torch.randn(Bt, 2 * P, L) * 0.5).to(dtype),
                A=-torch.exp(torch.randn(2 * P, N)),
                B=torch.randn(Bt, 2, N, L, dtype=dtype), C=torch.randn(Bt, 2, N, L, dtype=dtype),
                D=torch.randn(2 * P) if D else None,
                z=torch.randn(Bt, P, L, dtype=dtype) if z else None,
                delta_bias=torch.randn(2 * P) * 0.3 if bias else None)


def run(fn, ins, device='cpu', **kw):
    leaves = {k: v.to(device).clone().requires_grad_(True) for k, v in ins.items()
              if v is not None}
    y = fn(**{k: leaves.get(k) for k in NAMES}, **kw)
    torch.manual_seed(1)
    (y.float() * torch.randn(y.shape).to(device)).sum().backward()
    return y.detach().cpu(), {k: v.grad.cpu() for k, v in leaves.items()}


def check(ins, backend, tol=FP32_TOL, **kw):
    ref = run(bidirectional_scan_naive, ins, **kw)
    got = run(bidirectional_scan, ins, device=DEVICE if backend == 'triton' else 'cpu',
              backend=backend, **kw)
    assert got[0].dtype == ref[0].dtype
    torch.testing.assert_close(got[0], ref[0], **tol)
    for k in ref[1]:
        assert got[1][k].dtype == ins[k].dtype, k
        torch.testing.assert_close(got[1][k], ref[1][k], **tol, msg=lambda m: f'{k}: {m}')


def test_reference_is_two_scans_one_reversed():
    """Pin the semantics: direction 1 of position t sees positions t..L-1."""
    ins = make(L=6, seed=2)
    P = 3
    y = bidirectional_scan_naive(**ins, out_fp32=True)
    # changing u of direction 1 at the first position must not affect later positions
    ins2 = dict(ins)
    ins2['u'] = ins['u'].clone()
    ins2['u'][:, P:, 0] += 1.0
    y2 = bidirectional_scan_naive(**ins2, out_fp32=True)
    assert torch.equal(y[..., 1:], y2[..., 1:]) and not torch.equal(y[..., 0], y2[..., 0])
    fwd = selective_scan_naive(ins['u'][:, :P], ins['delta'][:, :P], ins['A'][:P],
                               ins['B'][:, 0], ins['C'][:, 0], D=ins['D'][:P], z=ins['z'],
                               delta_bias=ins['delta_bias'][:P], delta_softplus=True,
                               out_fp32=True)
    assert not torch.allclose(fwd, y)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('L', [1, 7, 63, 130])
def test_matches_reference(backend, L):
    check(make(L=L, seed=L), backend)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('opts', [dict(D=False, z=False, bias=False), dict(z=False),
                                  dict(N=16, P=5)])
def test_options(backend, opts):
    check(make(L=40, seed=4, **opts), backend)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision(backend, dtype):
    check(make(L=33, dtype=dtype, seed=6), backend, tol=LOWP_TOL)


@pytest.mark.parametrize('backend', BACKENDS)
def test_out_fp32(backend):
    ins = {k: (v.to(DEVICE if backend == 'triton' else 'cpu') if v is not None else None)
           for k, v in make(L=9, dtype=torch.bfloat16).items()}
    assert bidirectional_scan(**ins, out_fp32=True, backend=backend).dtype == torch.float32
    assert bidirectional_scan(**ins, backend=backend).dtype == torch.bfloat16


@pytest.mark.parametrize('bad,msg', [
    (dict(u=torch.randn(2, 5, 7)), r'`u` must be \(Bt, 2P, L\)'),
    (dict(B=torch.randn(2, 1, 2, 7)), r'`B` must be \(Bt, 2, N, L\)'),
    (dict(z=torch.randn(2, 6, 7)), r'`z` must be \(Bt, P, L\)'),
])
def test_bad_shapes(bad, msg):
    ins = make()
    ins.update(bad)
    with pytest.raises(ValueError, match=msg):
        bidirectional_scan(**ins)



def odd_stride_grad(shape):
    """A contiguous gradient whose size-1 batch dimension has a stride other
    than the canonical one, as autograd hands it to Vim's scan at batch 1."""
    g = torch.randn(shape[1] * shape[2])
    return g.as_strided(shape, (shape[2], shape[2], 1))


@pytest.mark.parametrize('backend', BACKENDS)
def test_views_and_batch_one(backend):
    """``u`` and ``z`` as Vim passes them (channel slices of the transposed
    ``(B, L, C)`` in_proj output), batch 1, and a gradient whose size-1
    dimension has an odd stride: the Triton backward once rejected it."""
    ins = make(Bt=1, L=9, seed=5)
    P2 = ins['u'].shape[1]
    dev = DEVICE if backend == 'triton' else 'cpu'
    xz0 = torch.cat([ins['u'], ins['z']], 1).transpose(1, 2).contiguous()  # (1, L, 3P)
    grad = odd_stride_grad((1, P2 // 2, 9))
    assert grad.is_contiguous() and grad.stride(0) != grad.numel()

    def run_views(fn, device, **kw):
        xz = xz0.to(device).requires_grad_(True)
        rest = {k: ins[k].to(device).requires_grad_(True)
                for k in ('delta', 'A', 'B', 'C', 'D', 'delta_bias')}
        u, z = xz.transpose(1, 2)[:, :P2], xz.transpose(1, 2)[:, P2:]
        assert not u.is_contiguous() and not z.is_contiguous()
        y = fn(u=u, z=z, **rest, **kw)
        y.float().backward(grad.to(device))
        return y.detach().cpu(), {'xz': xz.grad.cpu(),
                                  **{k: v.grad.cpu() for k, v in rest.items()}}

    ref = run_views(bidirectional_scan_naive, 'cpu')
    got = run_views(bidirectional_scan, dev, backend=backend)
    torch.testing.assert_close(got[0], ref[0], **FP32_TOL)
    for k in ref[1]:
        torch.testing.assert_close(got[1][k], ref[1][k], **FP32_TOL, msg=lambda m: f'{k}: {m}')
