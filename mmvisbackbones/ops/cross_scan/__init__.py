"""VMamba SS2D cross-scan / cross-merge (K = 4 directions)."""
from .cross_scan import CrossMergeFn, CrossScanFn, cross_merge, cross_scan
from .naive import cross_merge_naive, cross_scan_naive, scan_index

__all__ = [
    'cross_scan', 'cross_merge', 'cross_scan_naive', 'cross_merge_naive',
    'CrossScanFn', 'CrossMergeFn', 'scan_index'
]
