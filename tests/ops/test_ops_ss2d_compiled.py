"""The torch.compile'd CPU forward of the SS2D scan (``MMVB_SS2D_COMPILE=1``)
equals cross-scan -> scan -> cross-merge composed from the reference ops,
padded chunks, state axes, channels-last inputs and both precisions
included; its backward is the eager path's.

Every new shape compiles (tens of seconds on 2 cores), so the cases are few
and each covers several branches."""
import pytest
import torch

from mmvisbackbones.ops import ss2d_scan
from mmvisbackbones.ops.ss2d import compiled_ss2d, ss2d_scan_naive, torch_ss2d

from test_ops_ss2d import FP32_TOL, LOWP_TOL, NAMES, make, run

ENV = compiled_ss2d.ENV_VAR


@pytest.mark.parametrize('L', list(range(1, 200)) + [256, 334, 509, 1000])
def test_chunk_plan(L):
    T, n, pad = compiled_ss2d.chunk_plan(L)
    assert n * T == L + pad and 0 <= pad < n and T <= compiled_ss2d.TARGET_CHUNK
    if L <= compiled_ss2d.TARGET_CHUNK:
        assert (T, n, pad) == (L, 1, 0)
    elif any(L % k == 0 for k in range(compiled_ss2d.MIN_CHUNK, compiled_ss2d.TARGET_CHUNK + 1)):
        assert pad == 0 and T >= compiled_ss2d.MIN_CHUNK
    else:
        assert pad > 0 and n == -(-L // compiled_ss2d.TARGET_CHUNK)


@pytest.mark.parametrize('value,expected', [('1', True), ('on', True), ('TRUE', True),
                                            ('0', False), ('off', False), ('', False)])
def test_enabled_reads_the_variable(monkeypatch, value, expected):
    monkeypatch.setenv(ENV, value)
    assert compiled_ss2d.enabled() is expected


def test_enabled_rejects_other_values(monkeypatch):
    monkeypatch.setenv(ENV, 'fast')
    with pytest.raises(ValueError, match=ENV):
        compiled_ss2d.enabled()
    monkeypatch.delenv(ENV)
    assert compiled_ss2d.enabled() is False


@pytest.fixture
def compiled_calls(monkeypatch):
    """Turns the compiled forward on and counts its calls (so a test cannot
    pass on the eager path)."""
    monkeypatch.setenv(ENV, '1')
    calls = []
    real = torch_ss2d.ss2d_forward_compiled

    def spy(*args, **kw):
        calls.append(args[0].shape)
        return real(*args, **kw)

    monkeypatch.setattr(torch_ss2d, 'ss2d_forward_compiled', spy)
    return calls


def _channels_last(ins):
    """The inputs as VMamba's CPU forward hands them over: x, delta
    channels-last, B and C slices of one channels-last projection."""
    out = dict(ins)
    for k in ('x', 'delta'):
        out[k] = ins[k].contiguous(memory_format=torch.channels_last)
    Bt, K, N, H, W = ins['B'].shape
    dbl = torch.cat([ins['B'], ins['C']], 2).reshape(Bt, K * 2 * N, H, W)
    dbl = dbl.contiguous(memory_format=torch.channels_last).view(Bt, K, 2 * N, H, W)
    out['B'], out['C'] = dbl[:, :, :N], dbl[:, :, N:]
    return out


def _check(ins, tol, softplus=True):
    ref = run(ss2d_scan_naive, ins, delta_softplus=softplus)
    got = run(ss2d_scan, ins, backend='torch', delta_softplus=softplus)
    assert got[0].dtype == torch.float32 and got[0].shape == ins['x'].shape
    torch.testing.assert_close(got[0], ref[0], **tol)
    for k in ref[1]:
        torch.testing.assert_close(got[1][k], ref[1][k], **tol, msg=lambda m: f'{k}: {m}')


def test_padded_chunks_channels_last(compiled_calls):
    # rows of 35 (2 chunks of 18, one padded step) and columns of 37 (2 x 19)
    ins = _channels_last(make(Bt=2, P=3, H=37, W=35, N=1, seed=5))
    assert compiled_ss2d.chunk_plan(35)[2] == 1 and compiled_ss2d.chunk_plan(37)[2] == 1
    _check(ins, FP32_TOL)
    assert compiled_calls == [ins['x'].shape]


def test_state_axis_fp64_without_D_bias_softplus(compiled_calls):
    # N = 2; one chunk per column (H = 9), rows of 40 = 2 x 20; fp64 computes in fp64
    ins = make(Bt=1, P=4, H=9, W=40, N=2, D=False, bias=False, dtype=torch.float64, seed=6)
    ins['A'], ins['delta'] = ins['A'].double(), ins['delta'].abs()  # steps >= 0: decays <= 1
    args = [ins.get(k) for k in NAMES]
    # the eager path computes fp64 inputs in fp64 too: the two agree to fp64 rounding
    ref = torch_ss2d.ss2d_forward(*args, delta_softplus=False)
    got = torch_ss2d.ss2d_forward_compiled(*args, delta_softplus=False)
    assert got.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    _check(ins, FP32_TOL, softplus=False)
    assert len(compiled_calls) == 2


def test_low_precision_inputs(compiled_calls):
    ins = make(Bt=1, P=2, H=5, W=6, N=1, dtype=torch.bfloat16, seed=7)
    _check(ins, LOWP_TOL)
    assert compiled_calls == [ins['x'].shape]


def test_compile_failure_names_the_variable(monkeypatch):
    def broken(*args):
        raise OSError('no C++ compiler')

    monkeypatch.setattr(compiled_ss2d, '_compiled', broken)
    ins = make(Bt=1, P=2, H=3, W=4, N=1)
    with pytest.raises(RuntimeError, match=f'{ENV}=1.*no C\\+\\+ compiler.*Unset {ENV}'):
        compiled_ss2d.ss2d_forward_compiled(*(ins.get(k) for k in NAMES))


def test_more_sizes_than_dynamos_own_limit(compiled_calls):
    # dynamo's recompile limit (8 by default: two VMamba input sizes, one graph
    # per stage) does not stop a third size: the call sets its own, MAX_GRAPHS
    with torch._dynamo.config.patch(recompile_limit=1):
        for H, W in ((2, 3), (3, 2)):
            _check(make(Bt=1, P=2, H=H, W=W, N=1, seed=H), FP32_TOL)
    assert compiled_calls == [(1, 2, 2, 3), (1, 2, 3, 2)]


def test_graph_limit_is_named(monkeypatch):
    monkeypatch.setattr(compiled_ss2d, 'MAX_GRAPHS', 1)
    with pytest.raises(RuntimeError, match=f'already holds 1 compiled graphs.*MAX_GRAPHS.*{ENV}'):
        for H, W in ((2, 5), (5, 2)):
            ins = make(Bt=1, P=2, H=H, W=W, N=1)
            compiled_ss2d.ss2d_forward_compiled(*(ins.get(k) for k in NAMES))
