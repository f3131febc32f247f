"""Effective receptive field (ERF) of backbones, as in the VMamba paper and the
RepLKNet ERF analysis: for each stage, the gradient of the central output pixel
(ReLU, then summed over channels, as RepLKNet's code) w.r.t. the input, |grad|
summed over RGB and accumulated over the images, then ``log10(map + 1)``
divided by its maximum (RepLKNet's ``analyze_erf``), so 1 is the strongest
pixel and 0 a pixel the output does not depend on.

    python tools/analysis/erf.py --model vmamba_test swin_test --size 128 \
        --num-images 8 --out erf.png --json erf.json
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common  # noqa: E402

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
PANEL_IN, DPI = 2.5, 80


def erf_maps(net: torch.nn.Module, images: torch.Tensor) -> List[torch.Tensor]:
    """Raw accumulated |d out_c / d input| (H, W) per output of ``net``, where
    ``out_c`` is ``relu(f[:, :, h // 2, w // 2]).sum()`` as in RepLKNet's ERF code:
    the plain channel sum of a LayerNorm'd output (every backbone here ends its
    stages with one) is constant at init, so its gradient would be exactly zero.
    Images go one at a time so batch statistics cannot mix images."""
    acc = None
    for img in images:
        x = img[None].clone().requires_grad_(True)
        outs = net(x)
        grads = []
        for i, f in enumerate(outs):
            h, w = f.shape[-2:]
            g, = torch.autograd.grad(f[0, :, h // 2, w // 2].relu().sum(), x,
                                     retain_graph=i < len(outs) - 1)
            grads.append(g[0].abs().sum(0).detach())
        acc = grads if acc is None else [a + g for a, g in zip(acc, grads)]
    return acc


def normalise(m: torch.Tensor) -> torch.Tensor:
    """RepLKNet: log10(map + 1) divided by its maximum (all-zero stays zero)."""
    m = torch.log10(m + 1)
    hi = m.max()
    return m / hi if hi > 0 else torch.zeros_like(m)


def area_ratios(m: torch.Tensor) -> Dict[str, float]:
    """RepLKNet's high-contribution area ratio for each threshold t: the area of
    the smallest square around the centre (side 2i + 1, i >= 1) holding more
    than t of the map's total, as a fraction of the map's area (1.0 when only
    the whole map does)."""
    h, w = m.shape
    total = float(m.sum())
    out = {}
    for t in THRESHOLDS:
        ratio = 1.0
        if total > 0:
            for i in range(1, max(h, w) // 2 + 1):
                sq = m[max(h // 2 - i, 0):h // 2 + 1 + i, max(w // 2 - i, 0):w // 2 + 1 + i]
                if float(sq.sum()) / total > t:
                    ratio = sq.shape[0] * sq.shape[1] / (h * w)
                    break
        out[f'{t}'] = ratio
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_model_args(p, multiple=True)
    p.add_argument('--images', help='folder of jpg/png images (default: random noise images)')
    p.add_argument('--num-images', type=int, default=8,
                   help='images used (noise images, or the first N of --images)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='erf.png')
    p.add_argument('--json', help='also write the numeric summary to this JSON file')
    args = p.parse_args(argv)
    from mmengine.logging import MMLogger
    from mmengine.utils import ProgressBar
    logger = MMLogger.get_instance('erf', log_level='INFO')
    if args.num_images < 1:
        p.error('--num-images must be >= 1')

    torch.manual_seed(args.seed)
    if args.images:
        files = _common.list_images(args.images)[:args.num_images]
        images = torch.stack([_common.load_image(f, args.size)[0] for f in files])
    else:
        # noise in normalised space, i.e. images around the ImageNet mean
        images = torch.randn(args.num_images, 3, args.size, args.size)
    images = images.to(args.device)

    specs = [('model', m) for m in args.model] if args.model else [('config', args.config)]
    rows = []
    for kind, name in specs:
        net, label = _common.build(name if kind == 'model' else None,
                                   name if kind == 'config' else None,
                                   args.checkpoint, args.device)
        logger.info(f'ERF of {label} over {len(images)} images at {args.size}px')
        bar = ProgressBar(len(images))
        acc = None
        for img in images:
            maps = erf_maps(net, img[None])
            acc = maps if acc is None else [a + m for a, m in zip(acc, maps)]
            bar.update()
        sys.stdout.write('\n')
        stages = []
        for i, (raw, stride) in enumerate(zip(acc, net.out_strides)):
            m = normalise(raw.cpu())
            stages.append(dict(stage=i, stride=stride, map=m, area=area_ratios(m)))
            logger.info(f'  stage {i} (stride {stride}): high-contribution area ratio '
                        '(t: share of the input): ' + ', '.join(
                f'{t}: {v:.3f}' for t, v in stages[-1]['area'].items()))
        rows.append((label, stages))

    plt = _common.pyplot()
    ncol = max(len(s) for _, s in rows)
    fig, axes = plt.subplots(len(rows), ncol, squeeze=False,
                             figsize=(PANEL_IN * ncol, PANEL_IN * len(rows) + 0.3))
    for r, (label, stages) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r][c]
            ax.axis('off')
            if c < len(stages):
                st = stages[c]
                title = f'stage {c} (stride {st["stride"]})'
                ax.imshow(st['map'].numpy(), cmap='RdYlGn', vmin=0, vmax=1)
                ax.set_title(f'{label}\n{title}' if c == 0 else title, fontsize=7)
    fig.suptitle(f'ERF (ReLU channel-sum of the centre pixel, {len(images)} images, '
                 f'{args.size}px)', fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.85, wspace=0.05,
                        hspace=0.35)
    _common.save(fig, args.out, DPI)
    logger.info(f'wrote {args.out}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([dict(model=label, size=args.size, num_images=len(images),
                            stages=[dict(stage=s['stage'], stride=s['stride'],
                                         area_ratio=s['area']) for s in stages])
                       for label, stages in rows], f, indent=2)
        logger.info(f'wrote {args.json}')


if __name__ == '__main__':
    main()
