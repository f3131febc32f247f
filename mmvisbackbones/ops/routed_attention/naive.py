"""Readable reference of BiFormer's routed (region-to-region) token attention.

This is upstream's formulation (``ops/bra_legacy.py``: ``KVGather`` +
attention): for every query region the keys and values of its ``topk``
routed regions are gathered into a ``(B, R, topk, ...)`` copy, then ordinary
softmax attention runs over the ``topk * T`` gathered tokens.  The copy (and
autograd keeping it, and the full attention matrix, for the backward) is what
makes the memory grow ``topk`` times; :func:`..chunked.routed_attention` gives
the same numbers without it.  Kept for the tests and the benchmark.
"""
import torch


def gather_regions(x: torch.Tensor, r_idx: torch.Tensor) -> torch.Tensor:
    """``x`` (B, R, h, T, c), ``r_idx`` (B, R, K) region indices ->
    (B, R, K, h, T, c): for each query region, the K routed regions of x."""
    B, R = x.shape[:2]
    K = r_idx.shape[-1]
    # upstream: torch.gather over the (B, R, R, ...) broadcast of x
    expanded = x.unsqueeze(1).expand(B, R, *x.shape[1:])  # (B, R_q, R_kv, h, T, c), no copy
    index = r_idx.view(B, R, K, 1, 1, 1).expand(B, R, K, *x.shape[2:])
    return torch.gather(expanded, 2, index)


def routed_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               r_idx: torch.Tensor, scale: float) -> torch.Tensor:
    """Routed attention by the straightforward gather.

    Args:
        q, k: (B, R, h, T, d) queries / keys, grouped by region (R regions of
            T tokens) and head (h heads).
        v: (B, R, h, T, dv) values.
        r_idx: (B, R, K) int64, the K key/value regions each query region attends to.
        scale: logit scale (applied to q, as upstream).

    Returns:
        (B, R, h, T, dv): softmax((q * scale) @ k_sel^T) @ v_sel per query region,
        over the K * T tokens of its routed regions.
    """
    B, R, h, T, d = q.shape
    K = r_idx.shape[-1]
    k_sel = gather_regions(k, r_idx)  # (B, R, K, h, T, d)  -- K copies
    v_sel = gather_regions(v, r_idx)
    k_sel = k_sel.permute(0, 1, 3, 2, 4, 5).reshape(B, R, h, K * T, d)
    v_sel = v_sel.permute(0, 1, 3, 2, 4, 5).reshape(B, R, h, K * T, v.shape[-1])
    attn = ((q * scale) @ k_sel.transpose(-1, -2)).softmax(dim=-1)  # (B, R, h, T, K*T)
    return attn @ v_sel
