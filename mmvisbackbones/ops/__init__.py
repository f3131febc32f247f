"""Pure-PyTorch operators (no mmcv / mmengine dependency)."""
from .bidirectional import bidirectional_scan
from .cross_scan import cross_merge, cross_scan
from .routed_attention import routed_attention, routed_attention_reference
from .selective_scan import selective_scan
from .ss2d import ss2d_scan
from .wkv import bi_wkv

__all__ = ['selective_scan', 'cross_scan', 'cross_merge', 'ss2d_scan', 'bidirectional_scan',
           'bi_wkv', 'routed_attention', 'routed_attention_reference']
