"""Routed (bi-level routing) attention of BiFormer: a memory-light
chunked/online-softmax path with its own backward, and the straightforward
gather as reference."""
from .chunked import routed_attention
from .naive import gather_regions, routed_attention_reference

__all__ = ['routed_attention', 'routed_attention_reference', 'gather_regions']
