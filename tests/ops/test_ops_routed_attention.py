"""BiFormer's routed attention (ops/routed_attention/): the chunked
online-softmax op with its own backward against the straightforward gather
of naive.py, forward and every gradient, at odd sizes, topk 1 and all
regions, fp32, bf16 and an fp64 gradcheck; and what it keeps for the
backward."""
import pytest
import torch

from mmvisbackbones.ops.routed_attention import routed_attention, routed_attention_reference


def _routed_inputs(B, R, h, T, d, dv, K, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, R, h, T, d, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, R, h, T, dv, generator=g, dtype=dtype)
    idx = torch.stack([torch.stack([torch.randperm(R, generator=g)[:K] for _ in range(R)])
                       for _ in range(B)])
    return q, k, v, idx


CASES = [  # B, R, h, T, d, dv, K, chunk
    (2, 9, 2, 7, 5, 6, 1, 4),  # topk = 1, odd region size
    (2, 9, 2, 7, 5, 6, 9, 4),  # topk = all regions, last chunk partial
    (1, 16, 3, 15, 8, 8, 5, 1),  # one region per step
    (2, 4, 1, 1, 4, 4, 3, 2),  # single-token regions
    (1, 25, 2, 20, 16, 16, 16, 16),  # one step over all routed regions
]


@pytest.mark.parametrize('case', CASES, ids=str)
def test_routed_attention_matches_reference_fp32(case):
    *shape, K, chunk = case
    q, k, v, idx = _routed_inputs(*shape, K)
    for t in (q, k, v):
        t.requires_grad_(True)
    scale = 0.37
    out = routed_attention(q, k, v, idx, scale, chunk)
    ref = routed_attention_reference(q, k, v, idx, scale)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    gout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), gout)
    grads_ref = torch.autograd.grad(ref, (q, k, v), gout)
    for name, a, b in zip('qkv', grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f'd{name}')


@pytest.mark.parametrize('chunk', [1, 2, 3])
def test_routed_attention_gradcheck_fp64(chunk):
    q, k, v, idx = _routed_inputs(2, 4, 2, 3, 3, 2, 3, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: routed_attention(q, k, v, idx, 0.5, chunk),
                                    inputs)


@pytest.mark.parametrize('K', [1, 9])
def test_routed_attention_bf16(K):
    """bf16 inputs (fp32 softmax statistics inside): close to the fp32
    reference, as close as the straightforward gather run in bf16."""
    q, k, v, idx = _routed_inputs(2, 9, 2, 12, 16, 16, K)
    q16, k16, v16 = (t.bfloat16().requires_grad_(True) for t in (q, k, v))
    q32, k32, v32 = (t.requires_grad_(True) for t in (q, k, v))
    out = routed_attention(q16, k16, v16, idx, 0.25, 4)
    assert out.dtype == torch.bfloat16
    ref = routed_attention_reference(q32, k32, v32, idx, 0.25)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    gout = torch.randn_like(ref)
    g16 = torch.autograd.grad(out, (q16, k16, v16), gout.bfloat16())
    g32 = torch.autograd.grad(ref, (q32, k32, v32), gout)
    for name, a, b in zip('qkv', g16, g32):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2, msg=f'd{name}')


def test_routed_attention_saves_no_gathered_copy():
    """What autograd keeps for the backward: q, k, v, the output, the
    log-sum-exp and the indices, never a (B, R, K, ...) gathered copy or the
    attention matrix (the straightforward gather keeps both)."""
    K = 6
    q, k, v, idx = _routed_inputs(1, 9, 2, 10, 8, 8, K)
    for t in (q, k, v):
        t.requires_grad_(True)

    def saved_numels(fn):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(q, k, v, idx, 0.3)
        return sizes

    ours = saved_numels(routed_attention)
    gather = saved_numels(routed_attention_reference)
    assert max(ours) <= q.numel()
    assert max(gather) >= K * k.numel()  # the gathered keys / the attention matrix
    assert sum(ours) < sum(gather) / 2


def test_routed_attention_errors():
    q, k, v, idx = _routed_inputs(1, 4, 1, 3, 4, 4, 2)
    with pytest.raises(ValueError, match='r_idx must be int64'):
        routed_attention(q, k, v, idx.int(), 1.0)
    with pytest.raises(ValueError, match='chunk must be >= 1'):
        routed_attention(q, k, v, idx, 1.0, chunk=0)
    with pytest.raises(ValueError, match='expected q, k'):
        routed_attention(q, k[..., :2], v, idx, 1.0)
