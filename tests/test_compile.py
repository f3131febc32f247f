"""Every backbone under ``torch.compile(fullgraph=True)``: the same outputs
and gradients as eager.  The recurrences are one opaque ``mmvb::recurrence``
node each (ops/_compiled.py); everything around them is traced.

The zoo-wide tests use the ``aot_eager`` backend: dynamo's capture of the
whole graph (fullgraph) and AOTAutograd's joint forward / backward graph,
which is where a model breaks, without inductor's C++ code generation
(about a minute per model on a 2-core CPU).  VMamba also runs through
inductor, the default backend."""
import pytest
import torch

import mmvisbackbones
from mmvisbackbones.ops import _compiled, bi_wkv, selective_scan, ss2d_scan
from mmvisbackbones.ops.bidirectional import bidirectional_scan
from zoo import ZOO

FAMILIES = sorted(mmvisbackbones.BACKBONES)
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def build(name, train=False):
    torch.manual_seed(0)
    kwargs = dict(ZOO[name]['kwargs'])
    model = mmvisbackbones.BACKBONES[name](**kwargs)
    if train:  # deterministic: no drop path, so eager and compiled agree
        for m in model.modules():
            if hasattr(m, 'drop_prob'):
                m.drop_prob = 0.0
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return model.train(train)


def assert_close_to_scale(got, ref, what, rel=1e-4):
    """max |got - ref| <= rel * max |ref| (+ a floor): gradients summed in
    another order differ elementwise where they nearly cancel."""
    err = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale + 1e-7, f'{what}: max abs err {err:.3e}, max abs {scale:.3e}'


def count_blocks(model):
    return sum(len(s.blocks) if hasattr(s, 'blocks') else len(s) for s in model.stages)


def count_recurrence_nodes(model, x):
    """Graph nodes calling mmvb::recurrence in dynamo's (single) graph."""
    seen = []

    def backend(gm, example_inputs):
        seen.append(sum(1 for n in gm.graph.nodes
                        if n.op == 'call_function' and 'recurrence' in str(n.target)))
        return gm

    torch.compile(model, backend=backend, fullgraph=True)(x)
    return seen


@pytest.mark.parametrize('name', FAMILIES)
def test_compiled_forward_matches_eager(name):
    model = build(name)
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        ref = model(x)
        got = torch.compile(model, backend='aot_eager', fullgraph=True)(x)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, **TOL)


@pytest.mark.parametrize('name', FAMILIES)
def test_compiled_training_step_matches_eager(name):
    model = build(name, train=True)
    x = torch.randn(2, 3, 64, 64)
    weights = [torch.randn(c) for c in model.out_channels]

    def step(fn):
        model.zero_grad(set_to_none=True)
        outs = fn(x)
        loss = sum((o * w[:, None, None]).mean() for o, w in zip(outs, weights))
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()
                               if p.grad is not None}

    ref_loss, ref_grads = step(model)
    got_loss, got_grads = step(torch.compile(model, backend='aot_eager', fullgraph=True))
    torch.testing.assert_close(got_loss, ref_loss, **TOL)
    assert got_grads.keys() == ref_grads.keys() and len(ref_grads) > 0
    for k in ref_grads:
        assert_close_to_scale(got_grads[k], ref_grads[k], f'{name} grad of {k}')


@pytest.mark.parametrize('name, nodes', [('VMamba', 'ss2d_scan'), ('Vim', 'bidirectional_scan'),
                                         ('VisionRWKV', 'bi_wkv')])
def test_recurrences_are_single_opaque_nodes(name, nodes):
    """The recurrent families' scans appear as one mmvb::recurrence node per
    block in one graph, not as unrolled step loops."""
    model = build(name)
    blocks = count_blocks(model)
    with torch.no_grad():
        seen = count_recurrence_nodes(model, torch.randn(1, 3, 64, 64))
    assert seen == [blocks], (nodes, seen, blocks)


@pytest.mark.parametrize('name', ['VMamba'])
def test_inductor_forward_matches_eager(name):
    """The default backend: inductor's generated C++ for the graph around
    the recurrence nodes."""
    model = build(name)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        got = torch.compile(model, fullgraph=True)(x)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, **TOL)


# ------------------------------------------------------------ the ops
def _scan_inputs(L=37, G=1):
    g = torch.Generator().manual_seed(3)
    Bt, D, N = 2, 4, 3
    return dict(u=torch.randn(Bt, D, L, generator=g), delta=torch.randn(Bt, D, L, generator=g),
                A=-torch.rand(D, N, generator=g) - 0.5, B=torch.randn(Bt, G, N, L, generator=g),
                C=torch.randn(Bt, G, N, L, generator=g), D=torch.randn(D, generator=g),
                z=torch.randn(Bt, D, L, generator=g), delta_bias=torch.randn(D, generator=g))


def test_opaque_op_gradients_match_eager():
    """selective_scan with its last state, through mmvb::recurrence: output,
    state and every input gradient as eager (both outputs carry gradient)."""
    ins = _scan_inputs()

    def fn(u, delta, A, B, C, D, z, delta_bias):
        out, last = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                   return_last_state=True)
        return (out * 1.5).sum() + (last * last).sum()

    def grads(f):
        leaves = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
        f(**leaves).backward()
        return {k: v.grad for k, v in leaves.items()}

    ref = grads(fn)
    got = grads(torch.compile(fn, backend='aot_eager', fullgraph=True))
    for k in ref:
        assert_close_to_scale(got[k], ref[k], f'grad of {k}')


def test_opaque_op_gradients_with_absent_inputs():
    """Without the optional D, z and delta_bias the op's output still
    carries gradient to every given input (a None in the op's tensor list
    used to leave the compiled output without any)."""
    ins = {k: v for k, v in _scan_inputs(G=2).items() if k in ('u', 'delta', 'A', 'B', 'C')}

    def fn(u, delta, A, B, C):
        return (selective_scan(u, delta, A, B, C.expand_as(B), delta_softplus=True) * 1.5).sum()

    def grads(f):
        leaves = {k: v[:, :1].clone().requires_grad_(True) if k == 'C' else
                  v.clone().requires_grad_(True) for k, v in ins.items()}
        f(**leaves).backward()
        return {k: v.grad for k, v in leaves.items()}

    ref = grads(fn)
    got = grads(torch.compile(fn, backend='aot_eager', fullgraph=True))
    for k in ref:
        assert got[k] is not None, k
        assert_close_to_scale(got[k], ref[k], f'grad of {k}')


def test_opaque_op_keeps_eager_input_checks():
    """A bad input raises the op's own error when the compiled graph runs."""
    ins = _scan_inputs()
    ins['A'] = ins['A'][:, :2]  # N mismatch

    def fn(**kw):
        return selective_scan(**kw, delta_softplus=True)

    with pytest.raises(Exception, match='A'):
        torch.compile(fn, backend='aot_eager', fullgraph=True)(**ins)


def test_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        _compiled._run('nope', [], '{}')


def test_every_public_recurrence_is_registered():
    """Each public recurrence routes to its own eager body (not to itself:
    the op's fake implementation runs it on meta tensors while dynamo
    traces)."""
    assert sorted(_compiled._OPS) == ['bi_wkv', 'bidirectional_scan', 'selective_scan',
                                      'ss2d_scan']
    for public in (bi_wkv, bidirectional_scan, selective_scan, ss2d_scan):
        assert _compiled._OPS[public.__name__] is not public
