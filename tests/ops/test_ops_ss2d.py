"""The SS2D scan (VMamba): the fused Triton kernel and the torch path equal
cross-scan -> scan -> cross-merge composed from the reference ops."""
import os

import pytest
import torch

from mmvisbackbones.ops import ss2d_scan
from mmvisbackbones.ops.selective_scan import triton_scan
from mmvisbackbones.ops.ss2d import ss2d_scan_naive, to_scan_order, to_scan_order_naive
from mmvisbackbones.ops.ss2d import torch_ss2d

FP32_TOL = dict(rtol=6e-4, atol=2e-3)
LOWP_TOL = dict(rtol=3e-2, atol=5e-2)
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
CAN_TRITON = triton_scan.HAS_TRITON and (DEVICE == 'cuda'
                                         or os.environ.get('TRITON_INTERPRET') == '1')
BACKENDS = ['torch'] + (['triton'] if CAN_TRITON else [])
NAMES = ('x', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')


def make(Bt=2, P=3, H=5, W=7, N=2, D=True, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return dict(x=torch.randn(Bt, P, H, W, dtype=dtype),
                delta=(torch.randn(Bt, 4 * P, H, W) * 0.5).to(dtype),
                A=-torch.exp(torch.randn(4 * P, N)),
                B=torch.randn(Bt, 4, N, H, W, dtype=dtype),
                C=torch.randn(Bt, 4, N, H, W, dtype=dtype),
                D=torch.randn(4 * P) if D else None,
                delta_bias=torch.randn(4 * P) * 0.3 if bias else None)


def run(fn, ins, device='cpu', **kw):
    leaves = {k: v.to(device).clone().requires_grad_(True) for k, v in ins.items()
              if v is not None}
    y = fn(**{k: leaves.get(k) for k in NAMES}, **kw)
    torch.manual_seed(1)
    (y * torch.randn(y.shape).to(device)).sum().backward()
    return y.detach().cpu(), {k: v.grad.cpu() for k, v in leaves.items()}


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('H,W,N', [(1, 1, 1), (3, 5, 1), (7, 4, 3), (8, 8, 1), (9, 13, 2)])
def test_matches_composed_reference(backend, H, W, N):
    ins = make(H=H, W=W, N=N, seed=H * W)
    ref = run(ss2d_scan_naive, ins)
    got = run(ss2d_scan, ins, device=DEVICE if backend == 'triton' else 'cpu', backend=backend)
    assert got[0].dtype == torch.float32 and got[0].shape == ins['x'].shape
    torch.testing.assert_close(got[0], ref[0], **FP32_TOL)
    for k in ref[1]:
        torch.testing.assert_close(got[1][k], ref[1][k], **FP32_TOL, msg=lambda m: f'{k}: {m}')


@pytest.mark.parametrize('backend', BACKENDS)
def test_without_D_and_bias(backend):
    ins = make(H=6, W=5, D=False, bias=False, seed=3)
    ref = run(ss2d_scan_naive, ins)
    got = run(ss2d_scan, ins, device=DEVICE if backend == 'triton' else 'cpu', backend=backend)
    torch.testing.assert_close(got[0], ref[0], **FP32_TOL)
    for k in ref[1]:
        torch.testing.assert_close(got[1][k], ref[1][k], **FP32_TOL)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision(backend, dtype):
    ins = make(H=5, W=6, dtype=dtype, seed=7)
    ref = run(ss2d_scan_naive, ins)
    got = run(ss2d_scan, ins, device=DEVICE if backend == 'triton' else 'cpu', backend=backend)
    torch.testing.assert_close(got[0], ref[0], **LOWP_TOL)
    for k in ref[1]:
        assert got[1][k].dtype == ins[k].dtype
        torch.testing.assert_close(got[1][k], ref[1][k], **LOWP_TOL)


def test_scan_order_matches_index_table():
    t = torch.randn(2, 4, 3, 5, 7)
    assert torch.equal(to_scan_order(t), to_scan_order_naive(t))


@pytest.mark.parametrize('Bt,H,W,N', [(2, 5, 7, 1), (1, 3, 37, 1), (2, 41, 2, 3), (1, 1, 9, 2),
                                      (1, 11, 1, 1), (2, 17, 16, 2), (2, 12, 10, 1), (1, 8, 9, 2)])
@pytest.mark.parametrize('target', [None, 4])
def test_spatial_path_is_exact_in_float64(Bt, H, W, N, target, monkeypatch):
    """The eager torch path (rows and columns as chunks, cut into equal
    pieces when longer than the target; backwards directions as reverse
    recurrences) equals the composed sequential reference to rounding; long
    rows / tall maps give many chunks for the carry scan."""
    if target is not None:  # cut rows / columns into pieces of 2 to 4 pixels
        monkeypatch.setattr(torch_ss2d, 'TARGET_CHUNK', target)
        monkeypatch.setattr(torch_ss2d, 'MIN_CHUNK', 2)
    ins = {k: None if v is None else v.double()
           for k, v in make(Bt=Bt, P=3, H=H, W=W, N=N, seed=H + 7 * W).items()}
    ins['delta'] = ins['delta'] - 2.0      # small steps: decays near 1 carry far
    got = torch_ss2d.ss2d_forward(**ins, delta_softplus=True)
    assert got.dtype == torch.float64 and got.is_contiguous()
    ref = ss2d_scan_naive(**ins, out_fp32=False)
    assert ref.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_chunk_length():
    assert [torch_ss2d.chunk_length(n) for n in (1, 7, 32, 37, 64, 100, 128, 200, 320)] == \
        [1, 7, 32, 37, 32, 25, 32, 25, 32]
    assert torch_ss2d.chunk_length(2 * 41) == 82  # divisor 2 < MIN_CHUNK: one chunk


def test_onnx_export_takes_the_composed_path(tmp_path):
    """An exported graph must not record the eager spatial path, whose step
    loops have H and W steps: exported at 5x7 with dynamic H, W, it matches
    the reference at 6x9 and 17x3."""
    onnxruntime = pytest.importorskip('onnxruntime')
    names = list(NAMES)

    class SS2D(torch.nn.Module):
        def forward(self, *args):
            return ss2d_scan(**dict(zip(names, args)), backend='torch')

    ins = make(Bt=1, H=5, W=7, N=1)
    path = str(tmp_path / 'ss2d.onnx')
    spatial = {k: {2: 'H', 3: 'W'} for k in ('x', 'delta')}
    spatial.update({k: {3: 'H', 4: 'W'} for k in ('B', 'C')})
    with torch.no_grad():
        torch.onnx.export(SS2D(), tuple(ins[k] for k in names), path, input_names=names,
                          output_names=['y'], dynamic_axes=spatial, opset_version=17,
                          dynamo=False)
    sess = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for H, W in ((6, 9), (17, 3)):
        case = make(Bt=1, H=H, W=W, N=1, seed=H * W)
        got = sess.run(None, {k: case[k].numpy() for k in names})[0]
        torch.testing.assert_close(torch.from_numpy(got), ss2d_scan_naive(**case), **FP32_TOL)


def test_spatial_path_saves_only_its_inputs():
    ins = {k: (v.requires_grad_(True) if v is not None else None)
           for k, v in make(P=4, H=8, W=8, N=1).items()}
    y = ss2d_scan(**ins, backend='torch')
    assert type(y.grad_fn).__name__ == 'SS2DTorchFnBackward'
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert [t.data_ptr() for t in saved] == [ins[k].data_ptr() for k in NAMES
                                             if ins[k] is not None]


@pytest.mark.skipif(not CAN_TRITON, reason='needs triton and CUDA or TRITON_INTERPRET=1')
def test_fused_keeps_no_direction_copies():
    """The fused kernel saves the inputs and chunk states only: no (Bt, 4, P,
    L) copy of x, no per-direction outputs."""
    ins = {k: (v.to(DEVICE).requires_grad_(True) if v is not None else None)
           for k, v in make(P=4, H=8, W=8, N=1).items()}
    y = ss2d_scan(**ins, backend='triton')
    node = y.grad_fn.next_functions[0][0]  # the op's node, under the output view
    assert type(node).__name__ == 'SelectiveScanTritonFnBackward'
    saved = [t for t in node.saved_tensors if t is not None]
    Bt, P, H, W = ins['x'].shape
    big = [t for t in saved if t.numel() >= Bt * 4 * P * H * W]
    # only delta (an input of the op) has that size
    assert len(big) == 1 and big[0].shape == (Bt, 4 * P, H * W)
    assert big[0].data_ptr() == ins['delta'].data_ptr()


@pytest.mark.parametrize('bad,msg', [
    (dict(x=torch.randn(2, 3, 5)), r'`x` must be \(Bt, P, H, W\)'),
    (dict(delta=torch.randn(2, 3, 5, 7)), r'`delta` must be \(Bt, 4\*P, H, W\)'),
    (dict(B=torch.randn(2, 4, 2, 5, 6)), r'`B` must be \(Bt, 4, N, H, W\)'),
    (dict(C=torch.randn(2, 4, 1, 5, 7)), r'`C` must have the shape of `B`'),
    (dict(A=torch.randn(3, 2)), r'`A` must be \(4\*P, N\)'),
])
def test_bad_shapes(bad, msg):
    ins = make()
    ins.update(bad)
    with pytest.raises(ValueError, match=msg):
        ss2d_scan(**ins)
