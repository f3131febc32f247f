"""FLOPs of a backbone, counted the way the papers count them.

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
"""
from typing import Dict, Sequence

import torch
import torch.nn as nn

from ..ops._flops import count_recurrences


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
    # imported here: it costs ~0.2 s, which `import mmvisbackbones` need not pay
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    # the CPU kernel of scaled_dot_product_attention has no formula in torch's
    # counter (it would count nothing on CPU tensors): count it like the others
    def cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    mapping = {}
    cpu_op = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    if cpu_op is not None:
        mapping[cpu_op] = cpu_sdpa
    was_training = model.training
    model.eval()
    try:
        with count_recurrences() as recurrences, \
                FlopCounterMode(display=False, custom_mapping=mapping) as fc:
            model(x)
    finally:
        model.train(was_training)
    counted = fc.get_flop_counts().get('Global', {})  # empty when nothing was counted
    by_op = {str(k).split('.')[-1]: int(v) // 2 for k, v in counted.items()}
    by_op.update(recurrences)
    return dict(total=sum(by_op.values()), by_op=by_op)
