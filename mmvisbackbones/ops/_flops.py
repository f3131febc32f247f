"""The hook through which the recurrence ops report their FLOPs to
:func:`mmvisbackbones.utils.complexity.count_flops` (formulas there)."""
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

_STATE = threading.local()


def _counters() -> list:
    if not hasattr(_STATE, 'counters'):
        _STATE.counters, _STATE.depth = [], 0
    return _STATE.counters


@contextmanager
def count_recurrences() -> Iterator[Counter]:
    """Collect the MACs the recurrence ops report while the block runs, in the
    yielded ``Counter`` (op name -> MACs)."""
    counter = Counter()
    counters = _counters()
    counters.append(counter)
    try:
        yield counter
    finally:
        counters.remove(counter)


@contextmanager
def recurrence_op(name: str, macs: Callable[[], int]):
    """Wrap the body of a public recurrence op.  When a counter is active and
    the op returns, ``macs()`` is reported to it, once: an op that calls
    another op inside (``ss2d_scan`` over ``selective_scan``) is counted by
    the outer one only.  ``macs`` is only called then, on inputs the op has
    validated."""
    counters = _counters()
    outer = _STATE.depth == 0
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
    if counters and outer:
        n = int(macs())
        for c in counters:
            c[name] += n


def selective_scan_macs(batch: int, dim: int, length: int, d_state: int, with_d: bool,
                        with_z: bool) -> int:
    return batch * length * dim * (9 * d_state + int(with_d) + int(with_z))


def wkv_macs(batch: int, length: int, channels: int) -> int:
    return 29 * batch * length * channels
