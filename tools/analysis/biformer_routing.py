"""Routed regions of a BiFormer: for a query region at each stage, draw on the
image the regions its bi-level routing attention picks (top-k of the region
affinity), ranks labelled. Captured by wrapping each block's ``route`` on the
instance: the numerics of the model are unchanged.

    python tools/analysis/biformer_routing.py --model biformer_test --image demo.jpg \
        --point 40 20 --block -1
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common  # noqa: E402

PANEL_IN, DPI = 3.0, 80


class RoutingRecorder:
    """Records the (N, R, topk) indices every BiLevelRoutingAttention of a
    BiFormer returns from ``route``, per stage and block. Use as a context manager;
    leaving it restores the class method. Stages with global attention are noted
    in ``topks`` as -2 (with LePE) or -1 (without) and record nothing."""

    def __init__(self, net):
        from mmvisbackbones.backbones.biformer import (BiFormer, BiLevelRoutingAttention,
                                                       GlobalAttention)
        if not isinstance(net, BiFormer):
            raise TypeError(f'biformer_routing needs a BiFormer backbone, got '
                            f'{type(net).__name__}')
        self.records: Dict[int, List[torch.Tensor]] = {}
        self.topks: Dict[int, int] = {}
        self._patched = []
        for s, stage in enumerate(net.stages):
            for m in stage.modules():
                if isinstance(m, BiLevelRoutingAttention):
                    self._patch(s, m)
                elif isinstance(m, GlobalAttention):
                    self.topks.setdefault(s, -2 if m.lepe is not None else -1)

    def _patch(self, s, attn):
        self.topks[s] = attn.topk
        orig = attn.route

        def route(q, k):
            idx = orig(q, k)
            self.records.setdefault(s, []).append(idx.detach().cpu())
            return idx
        attn.route = route
        self._patched.append(attn)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for attn in self._patched:
            del attn.route  # back to the class method
        return False


def region_of_point(x: float, y: float, size: int, n_win: int):
    """(row, col) in the n_win x n_win region grid of the pixel (x, y) of the
    size x size image (exact when each stage map is a multiple of n_win)."""
    if not (0 <= x < size and 0 <= y < size):
        raise ValueError(f'--point {x} {y} lies outside the {size}x{size} image')
    return int(y * n_win // size), int(x * n_win // size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    _common.add_model_args(p)
    p.add_argument('--image', required=True)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument('--query', type=int, nargs=2, metavar=('ROW', 'COL'),
                   help='query region in the region grid (same grid at every stage)')
    q.add_argument('--point', type=float, nargs=2, metavar=('X', 'Y'),
                   help='query pixel of the resized image, mapped to the region grid')
    p.add_argument('--block', type=int, default=-1, help='block of each stage shown (-1: last)')
    p.add_argument('--out', default='routing.png')
    args = p.parse_args(argv)
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('biformer_routing', log_level='INFO')
    x, rgb = _common.load_image(args.image, args.size)
    net, label = _common.build(args.model, args.config, args.checkpoint, args.device)
    rec = RoutingRecorder(net)
    n = net.n_win
    if args.query:
        row, col = args.query
        if not (0 <= row < n and 0 <= col < n):
            raise ValueError(f'--query {row} {col} outside the {n}x{n} region grid')
    else:
        row, col = region_of_point(args.point[0], args.point[1], args.size, n)
    for s, stride in enumerate(net.strides):
        side = -(-args.size // stride)
        if side % n:
            logger.warning(f'stage {s}: map side {side} is padded to a multiple of n_win={n}; '
                           'the drawn grid is approximate')
    with rec, torch.no_grad():
        net(x[None].to(args.device))
    qr = row * n + col

    plt = _common.pyplot()
    from matplotlib.patches import Rectangle
    ns = len(net.stages)
    fig, axes = plt.subplots(1, ns, squeeze=False, figsize=(PANEL_IN * ns, PANEL_IN + 0.4))
    cell = args.size / n
    for s in range(ns):
        ax = axes[0][s]
        ax.imshow(rgb.numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        topk = rec.topks.get(s)
        if s not in rec.records:
            what = 'all regions (global attention)' if topk in (-1, -2) else 'no routing'
            ax.set_title(f'stage {s}: topk={topk}\n{what}, nothing routed', fontsize=7)
            logger.info(f'stage {s}: topk={topk}: {what}')
            continue
        blocks = rec.records[s]
        if not -len(blocks) <= args.block < len(blocks):
            raise ValueError(f'--block {args.block}: stage {s} has {len(blocks)} blocks')
        idx = blocks[args.block][0, qr].tolist()
        for i in range(1, n):
            ax.axhline(i * cell - 0.5, color='w', lw=0.5)
            ax.axvline(i * cell - 0.5, color='w', lw=0.5)
        for rank, r in enumerate(idx):
            rr, cc = divmod(r, n)
            ax.add_patch(Rectangle((cc * cell - 0.5, rr * cell - 0.5), cell, cell,
                                   color='orange', alpha=0.45))
            ax.text((cc + 0.5) * cell, (rr + 0.5) * cell, str(rank + 1), color='k',
                    ha='center', va='center', fontsize=8, weight='bold')
        ax.add_patch(Rectangle((col * cell - 0.5, row * cell - 0.5), cell, cell, fill=False,
                               edgecolor='red', lw=2))
        shown = ', '.join(map(str, idx[:6])) + (f', ... ({len(idx)})' if len(idx) > 6 else '')
        ax.set_title(f'stage {s}: topk={topk}, query ({row},{col})\nblock {args.block}: '
                     f'routes to [{shown}]', fontsize=7)
        logger.info(f'stage {s}: query region ({row},{col}) routes to {idx} (rank order)')
    fig.suptitle(f'{label}: bi-level routing, {n}x{n} regions', fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.78, wspace=0.05)
    _common.save(fig, args.out, DPI)
    logger.info(f'wrote {args.out}')


if __name__ == '__main__':
    main()
