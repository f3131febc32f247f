"""Mixed precision on any device: mmengine's ``AmpOptimWrapper`` runs only on
CUDA / NPU / MLU / MUSA, so CPU training (and a bf16 check of a recipe on a
CPU machine) had no autocast path."""
import functools
import importlib
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16,
           'fp16': torch.float16}


#: mmcv ops whose kernels (CPU, and CUDA for bf16) take float32 / float16
#: only; under autocast their floating inputs are cast to float32, as autocast
#: does for the ops on its own float32 list: (module, autograd Function,
#: module-level aliases of its ``apply``)
FP32_OPS = (('mmcv.ops.nms', 'NMSop', ()),
            ('mmcv.ops.roi_align', 'RoIAlignFunction', ('roi_align', )))


def _cast_fp32(x):
    return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _cast_back(out, dtype):
    if dtype is None:
        return out
    if isinstance(out, torch.Tensor):
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_cast_back(o, dtype) for o in out)
    return out


def enable_fp32_islands() -> list:
    """Make the :data:`FP32_OPS` that are importable run in float32 while
    autocast is on (nothing changes outside autocast); idempotent.
    Returns the ops wrapped."""
    done = []
    for mod_name, fn_name, aliases in FP32_OPS:
        try:
            mod = importlib.import_module(mod_name)
            fn = getattr(mod, fn_name)
        except (ImportError, AttributeError):
            continue  # mmcv not installed (or another version): nothing to wrap
        if not getattr(fn.apply, '_mmvb_fp32', False):
            orig = fn.apply

            @functools.wraps(orig)
            def apply_fp32(*args, _orig=orig, **kwargs):
                if torch.is_autocast_enabled('cpu') or torch.is_autocast_enabled('cuda'):
                    dtype = next((a.dtype for a in args if isinstance(a, torch.Tensor)
                                  and a.is_floating_point()), None)
                    args = tuple(_cast_fp32(a) for a in args)
                    kwargs = {k: _cast_fp32(v) for k, v in kwargs.items()}
                    with torch.autocast('cpu', enabled=False), \
                            torch.autocast('cuda', enabled=False):
                        out = _orig(*args, **kwargs)
                    # back to the caller's dtype, as a kernel of that dtype returns
                    return _cast_back(out, dtype)
                return _orig(*args, **kwargs)

            apply_fp32._mmvb_fp32 = True
            fn.apply = apply_fp32
        parent = importlib.import_module(mod_name.rsplit('.', 1)[0])
        for alias in aliases:  # `roi_align = RoIAlignFunction.apply` kept the original
            for where in (mod, parent):  # the module and the package that re-exports it
                old = getattr(where, alias, None)
                if old is not None and not isinstance(old, type(importlib)) and \
                        not getattr(old, '_mmvb_fp32', False):
                    setattr(where, alias, fn.apply)
        done.append(f'{mod_name}.{fn_name}')
    return done


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward (``model.train_step``'s loss
    computation) runs under ``torch.autocast`` on the model's device, CPU
    included.

    Args:
        dtype: ``'bfloat16'`` (default) or ``'float16'``.  No loss scaling is
            applied: bf16 has float32's exponent range.  For float16 on GPUs
            use mmengine's ``AmpOptimWrapper``, which scales the loss; on the
            CPU float16 autocast needs a torch that supports it, and is
            refused otherwise.
        **kwargs: as :class:`mmengine.optim.OptimWrapper`.

    The parameters, the optimizer state and the recurrences' states (the ops
    keep them in float32) stay float32; only autocast's op list runs in
    ``dtype``.  mmcv's NMS and RoIAlign have no bf16 kernels (none on the CPU,
    none for bf16 on CUDA); they run in float32 (:func:`enable_fp32_islands`).
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs):
        if dtype not in _DTYPES:
            raise ValueError(f'AutocastOptimWrapper: dtype must be one of {sorted(_DTYPES)}, '
                             f'got {dtype!r}')
        super().__init__(**kwargs)
        self.cast_dtype = _DTYPES[dtype]
        self.fp32_ops = enable_fp32_islands()

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        param = next(model.parameters(), None)
        device = param.device.type if param is not None else 'cpu'
        if not torch.amp.is_autocast_available(device):
            raise RuntimeError(f'AutocastOptimWrapper: torch has no autocast for {device!r}')
        with super().optim_context(model), torch.autocast(device_type=device,
                                                          dtype=self.cast_dtype):
            yield
