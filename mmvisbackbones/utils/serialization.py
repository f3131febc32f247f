"""Allow-list for ``torch.load(..., weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default.  mmengine 0.10's
Runner saves, next to the tensors, its message hub (``HistoryBuffer`` objects
holding numpy arrays) and numpy scalars in the checkpoint's ``meta``.  Those
are plain data, but the weights-only unpickler refuses them, so ``--resume``
and ``tools/test.py`` would fail on the checkpoints the Runner itself wrote.

HistoryBuffer also pickles its statistics functions (``HistoryBuffer.min``,
...), which pickle writes as ``getattr(HistoryBuffer, 'min')``.  Allowing the
builtin ``getattr`` would let a file reach any attribute of any allowed
object, so we register :func:`_history_buffer_getattr` under that name
instead: it resolves only HistoryBuffer's registered statistics methods and
refuses everything else.

Rather than switching the unpickler off (``weights_only=False`` executes any
pickled code, and a checkpoint is untrusted input), we add exactly those data
types to torch's allow-list.  :func:`register_safe_globals` is called when
``mmvisbackbones`` is imported, so it covers any config that loads the plugin
with ``custom_imports``, and by our loaders and tools.
"""
import functools


def _numpy_types():
    import numpy as np
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    types = [np.ndarray, np.dtype, _reconstruct, scalar]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25: one class per dtype
    if dtypes is not None:
        types += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return types


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` inside the weights-only unpickler:
    only ``HistoryBuffer.<registered statistics method>``."""
    import pickle

    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and (
            name in HistoryBuffer._statistics_methods
            or name in ('min', 'max', 'current', 'mean')):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer statistics '
        'methods are allowed in weights-only loading')


def safe_globals():
    """The globals we allow in addition to torch's defaults."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')] + _numpy_types()


@functools.lru_cache(maxsize=None)
def register_safe_globals() -> bool:
    """Add :func:`safe_globals` to torch's weights-only allow-list (idempotent).

    Returns False on a torch without ``add_safe_globals`` (< 2.4), where
    ``weights_only`` defaults to False anyway.
    """
    import torch.serialization as ts
    if not hasattr(ts, 'add_safe_globals'):
        return False
    ts.add_safe_globals(safe_globals())
    return True
