"""The recurrences as one opaque op under ``torch.compile``.

The recurrent cores (selective scan, the bidirectional and four-direction
scans, bi-WKV, routed attention) are Python step loops around small PyTorch
calls (CPU) or Triton launches (CUDA).  Traced by dynamo they would unroll
into graphs of thousands of nodes that take minutes to compile and gain
nothing, so while ``torch.compile`` traces a model each public op is
recorded as a call of one registered custom op::

    mmvb::recurrence(str op, Tensor?[] inputs, str options) -> Tensor[]

``op`` names the public function, ``inputs`` are its tensor arguments in
order (an empty tensor where an optional one is absent, listed in the
options' ``_absent``) and ``options`` its other arguments as JSON.  At run
time the op calls the public function in eager mode, so the backend rules
(``MMVB_SCAN_BACKEND``, Triton on CUDA) and every input check are those of
eager code; the graph around it (projections, norms, convolutions) is
compiled, and ``fullgraph=True`` holds.

Shapes for the compiler (the fake implementation) come from the ops' own
shape-only path on ``meta`` tensors.  The backward is a second custom op,
``mmvb::recurrence_backward``: it recomputes the op under autograd from the
saved inputs (on a worker thread: see :func:`_in_autograd_thread`) and
back-propagates the incoming gradients through the op's own backward, so a
compiled training step runs each recurrence's forward twice (the eager
path's backward functions recompute it once anyway).
"""
import concurrent.futures
import contextlib
import json
from typing import Callable, Dict, List, Optional, Sequence

import torch

_OPS: Dict[str, Callable] = {}


def register(name: str, fn: Callable) -> None:
    """Make ``fn`` (a public op: tensors first, then keyword options)
    callable through :func:`call`."""
    _OPS[name] = fn


def compiling() -> bool:
    """True while dynamo traces (``torch.compile``); False in eager code,
    under ``torch.jit.trace`` / ONNX export, and inside the op at run time."""
    return torch.compiler.is_compiling()


#: option naming the inputs that are absent (None) in the public call
ABSENT = '_absent'


def _run(op: str, inputs: Sequence[Optional[torch.Tensor]], options: str) -> List[torch.Tensor]:
    if op not in _OPS:
        raise ValueError(f'mmvb::recurrence: unknown op {op!r}; registered: {sorted(_OPS)}')
    kw = json.loads(options)
    absent = set(kw.pop(ABSENT, ()))
    inputs = [None if i in absent else t for i, t in enumerate(inputs)]
    out = _OPS[op](*inputs, **kw)
    return [out] if isinstance(out, torch.Tensor) else list(out)


@torch.library.custom_op('mmvb::recurrence', mutates_args=())
def _recurrence(op: str, inputs: List[Optional[torch.Tensor]], options: str) -> List[torch.Tensor]:
    # the outputs are new tensors; clone any that aliases an input (a custom
    # op may not return its inputs)
    ids = {id(t) for t in inputs if t is not None}
    return [t.clone() if id(t) in ids else t for t in _run(op, inputs, options)]


def _meta(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                                      device='meta')


@_recurrence.register_fake
def _recurrence_fake(op, inputs, options):
    device = next(t.device for t in inputs if t is not None)
    with torch.no_grad():
        outs = _run(op, [_meta(t) for t in inputs], options)  # the ops' shape-only path
    return [torch.empty(o.shape, dtype=o.dtype, device=device) for o in outs]


_WORKER: List[Optional[concurrent.futures.ThreadPoolExecutor]] = [None]


def _in_autograd_thread(fn):
    """``fn()`` on a worker thread, where autograd records.

    A custom op's implementation runs below the autograd dispatch key: the
    ops it calls record no graph, even under ``enable_grad``, and functorch's
    ``vjp`` refuses old-style autograd Functions (the backends' own).  The
    dispatch-key state is thread-local, so a recompute on another thread
    records normally; the caller's CUDA device and stream are carried over
    (both are thread-local too)."""
    if _WORKER[0] is None:
        _WORKER[0] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='mmvb-bwd')
    ctx = contextlib.nullcontext
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        device, stream = torch.cuda.current_device(), torch.cuda.current_stream()

        def ctx():
            stack = contextlib.ExitStack()
            stack.enter_context(torch.cuda.device(device))
            stack.enter_context(torch.cuda.stream(stream))
            return stack

    def run():
        with ctx(), torch.enable_grad():
            return fn()

    return _WORKER[0].submit(run).result()


@torch.library.custom_op('mmvb::recurrence_backward', mutates_args=())
def _recurrence_backward(op: str, inputs: List[Optional[torch.Tensor]], options: str,
                         grads: List[Optional[torch.Tensor]]) -> List[torch.Tensor]:
    """Gradients for every input (zeros where none flows, an empty tensor
    for an absent or integer input), by recomputing the op under autograd."""

    def vjp():
        leaves = [t.detach().requires_grad_(True) if t is not None and t.is_floating_point()
                  else t for t in inputs]
        outs = _run(op, leaves, options)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        got = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                  allow_unused=True) if pairs else [None] * len(wanted)
        return leaves, got

    leaves, got = _in_autograd_thread(vjp)
    got = iter(got)
    result = []
    for t in leaves:
        if t is None or not t.requires_grad:
            result.append(torch.empty(0))
            continue
        g = next(got)
        result.append(torch.zeros_like(t) if g is None else g)
    return result


@_recurrence_backward.register_fake
def _recurrence_backward_fake(op, inputs, options, grads):
    return [torch.empty_like(t) if t is not None and t.is_floating_point() else torch.empty(0)
            for t in inputs]


def _setup_context(ctx, inputs, output):
    op, tensors, options = inputs
    ctx.op, ctx.options, ctx.n = op, options, len(tensors)
    ctx.absent = [t is None for t in tensors]
    ctx.save_for_backward(*[t for t in tensors if t is not None])


def _backward(ctx, grads):
    saved = iter(ctx.saved_tensors)
    tensors = [None if absent else next(saved) for absent in ctx.absent]
    got = _recurrence_backward(ctx.op, tensors, ctx.options, list(grads))
    return None, [None if t is None or not t.is_floating_point() else g
                  for t, g in zip(tensors, got)], None


_recurrence.register_autograd(_backward, setup_context=_setup_context)


@torch.compiler.assume_constant_result
def _encode(options: dict) -> str:
    # run as Python while dynamo traces (json's C encoder cannot be traced);
    # the options are constants of the traced call
    return json.dumps(options, sort_keys=True)


def call(op: str, inputs: Sequence[Optional[torch.Tensor]], **options):
    """``op(*inputs, **options)`` as one ``mmvb::recurrence`` node: a tensor
    when the op returns one, else a tuple."""
    # an absent input travels as an empty tensor named in the options: with a
    # None in its tensor list the op's outputs would not require grad (the
    # autograd formula registered below would never run)
    absent = [i for i, t in enumerate(inputs) if t is None]
    if absent:
        device = next(t.device for t in inputs if t is not None)
        options[ABSENT] = absent
        inputs = [torch.empty(0, device=device) if t is None else t for t in inputs]
    outs = _recurrence(op, list(inputs), _encode(options))
    return outs[0] if len(outs) == 1 else tuple(outs)
