"""FLOPs of a backbone or a whole model, counted the way the papers count them.

``count_flops(model, (1, 3, 224, 224))`` returns multiply-accumulates (the
"GFLOPs" of fvcore, mmengine and every paper this package ports; one MAC is
one FLOP), from two sources:

* ``torch.utils.flop_counter.FlopCounterMode`` for matrix products,
  convolutions and scaled-dot-product attention (it counts 2 per MAC; we
  halve).  Element-wise work (norms, activations, softmax) is not counted,
  as fvcore does not count it by default.
* The recurrences of :mod:`mmvisbackbones.ops` report their own count with
  the formula their upstream project uses in its FLOPs tables (a dispatcher
  op is a Python function, invisible to a dispatch-level counter):

  - selective scan: ``9·B·L·D·N`` + ``B·D·L`` for the ``D`` skip + ``B·D·L``
    for the ``z`` gate (VMamba's ``flops_selective_scan_fn``);
  - bidirectional WKV: ``29·B·T·C`` (Vision-RWKV's ``get_flops_backbone.py``).

The model may live on the ``meta`` device: nothing is computed, so the count
at 1280x800 takes seconds (the recurrences have a shape-only path for meta
tensors).

:func:`counting_macs` is the same counter as a context manager, for code that
calls a model its own way (a detector's ``forward(inputs, data_samples)``,
a head on given features); with ``model=`` it also splits the count by the
submodule that ran each op (``tools/analysis/get_flops.py``).
"""
from collections import Counter
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence

import torch
import torch.nn as nn

from ..ops._flops import count_recurrences


class MacCount:
    """What :func:`counting_macs` counted: ``total`` and ``by_op`` (op name ->
    MACs) and, when a model was given, ``by_module`` (qualified name of the
    innermost submodule of the model that was running -> MACs; ``''`` for work
    done by the model's own code outside any submodule).  Filled when the
    block exits."""

    def __init__(self):
        self.total = 0
        self.by_op: Dict[str, int] = {}
        self.by_module: Dict[str, int] = {}

    def grouped(self, depth: int = 1) -> Dict[str, int]:
        """``by_module`` summed over the first ``depth`` components of the
        names (``depth=1``: backbone, neck, rpn_head, ...)."""
        out = Counter()
        for name, n in self.by_module.items():
            out['.'.join(name.split('.')[:depth]) if name else ''] += n
        return dict(out)

    def __repr__(self):
        return f'MacCount(total={self.total}, by_op={self.by_op})'


class _ModuleSplit:
    """Splits a running total by the innermost submodule of ``model`` being
    run: at every module entry and exit, what the total grew by since the last
    boundary goes to the module on top of the stack.  Global module hooks, so
    submodules called through ``.forward()`` directly (mmdet's
    ``roi_head.forward``) still have their children seen."""

    def __init__(self, model: nn.Module, read_total):
        self.names = {id(m): name for name, m in model.named_modules()}
        self.read_total = read_total
        self.stack = ['']
        self.last = 0
        self.split = Counter()

    def flush(self):
        now = self.read_total()
        if now != self.last:
            self.split[self.stack[-1]] += now - self.last
            self.last = now

    def pre(self, module, args):
        name = self.names.get(id(module))
        if name is not None:
            self.flush()
            self.stack.append(name)

    def post(self, module, args, output):
        if self.names.get(id(module)) is not None and len(self.stack) > 1:
            self.flush()
            self.stack.pop()


@contextmanager
def counting_macs(model: Optional[nn.Module] = None) -> Iterator[MacCount]:
    """Count the MACs of everything that runs inside the block (forward, and
    backward if it runs there too), the way :func:`count_flops` does; the
    yielded :class:`MacCount` is filled on exit.  With ``model``, the count is
    also split by the submodule of ``model`` that ran each op
    (``MacCount.by_module`` / ``grouped()``).  Not reentrant (one
    ``FlopCounterMode`` at a time)."""
    # imported here: it costs ~0.2 s, which `import mmvisbackbones` need not pay
    from torch.nn.modules.module import (register_module_forward_hook,
                                         register_module_forward_pre_hook)
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    # the CPU kernel of scaled_dot_product_attention has no formula in torch's
    # counter (it would count nothing on CPU tensors): count it like the others
    def cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    mapping = {}
    cpu_op = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    if cpu_op is not None:
        mapping[cpu_op] = cpu_sdpa
    result = MacCount()
    fc = FlopCounterMode(display=False, custom_mapping=mapping)
    with count_recurrences() as recurrences:
        # torch counts 2 per MAC, the recurrences report MACs: total in half-MACs
        def read_total():
            return sum(fc.flop_counts['Global'].values()) + 2 * sum(recurrences.values())

        split = _ModuleSplit(model, read_total) if model is not None else None
        handles = []
        if split is not None:
            handles = [register_module_forward_pre_hook(split.pre),
                       register_module_forward_hook(split.post, always_call=True)]
        try:
            with fc:
                yield result
        finally:
            for h in handles:
                h.remove()
        counted = fc.get_flop_counts().get('Global', {})  # empty when nothing was counted
        by_op = {str(k).split('.')[-1]: int(v) // 2 for k, v in counted.items()}
        by_op.update(recurrences)
        result.by_op = by_op
        result.total = sum(by_op.values())
        if split is not None:
            split.flush()
            result.by_module = {k: v // 2 for k, v in split.split.items()}


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)) -> Dict:
    """Multiply-accumulates of one forward pass of ``model`` on an input of
    ``input_shape`` (on the model's device; ``meta`` works).

    Returns ``dict(total=int, by_op={op: int})``.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(tuple(input_shape), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with counting_macs() as macs:
            model(x)
    finally:
        model.train(was_training)
    return dict(total=macs.total, by_op=macs.by_op)
