"""The hook through which the recurrence ops report their FLOPs to
:func:`mmvisbackbones.utils.complexity.count_flops` (formulas there)."""
import threading
from contextlib import contextmanager

_STATE = threading.local()


def _counters() -> list:
    if not hasattr(_STATE, 'counters'):
        _STATE.counters, _STATE.depth = [], 0
    return _STATE.counters


@contextmanager
def recurrence_op(name: str, macs: int):
    """Wrap the body of a public recurrence op: report ``macs`` to the active
    counters once (an op that calls another op inside, e.g. ``ss2d_scan``
    over ``selective_scan``, is counted by the outer one only)."""
    counters = _counters()
    if counters and _STATE.depth == 0:
        for c in counters:
            c[name] += int(macs)
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def selective_scan_macs(batch: int, dim: int, length: int, d_state: int, with_d: bool,
                        with_z: bool) -> int:
    return batch * length * dim * (9 * d_state + int(with_d) + int(with_z))


def wkv_macs(batch: int, length: int, channels: int) -> int:
    return 29 * batch * length * channels
