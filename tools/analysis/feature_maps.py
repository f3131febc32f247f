"""Per-stage feature maps of one image: for each stage the channel mean and the
top-k channels by activation energy (mean squared activation), in a grid beside
the input image.  Every backbone here ends its stages with a LayerNorm, which
makes each pixel's channels zero-mean before the affine part: with random init
(gamma 1, beta 0) the channel-mean panel is flat noise, and only a checkpoint's
learnt gamma / beta make it informative; the top channels show structure either
way.

    python tools/analysis/feature_maps.py --model swin_test --image demo.jpg --topk 4
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _common  # noqa: E402

PANEL_IN, DPI = 1.6, 80


def stage_summaries(feats, topk: int):
    """Per output (C, h, w): (channel mean, [(channel index, map)] of the top-k by energy)."""
    out = []
    for f in feats:
        f = f[0].detach().float().cpu()
        k = min(topk, f.shape[0])
        idx = f.pow(2).mean(dim=(1, 2)).topk(k).indices.tolist()
        out.append((f.mean(0), [(i, f[i]) for i in idx]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    _common.add_model_args(p)
    p.add_argument('--image', required=True, help='jpg/png image')
    p.add_argument('--topk', type=int, default=4, help='strongest channels shown per stage')
    p.add_argument('--out', default='feature_maps.png')
    args = p.parse_args(argv)
    if args.topk < 1:
        p.error('--topk must be >= 1')
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('feature_maps', log_level='INFO')
    x, rgb = _common.load_image(args.image, args.size)
    net, label = _common.build(args.model, args.config, args.checkpoint, args.device)
    logger.info(f'feature maps of {label} at {args.size}px')
    with torch.no_grad():
        feats = net(x[None].to(args.device))
    rows = stage_summaries(feats, args.topk)

    plt = _common.pyplot()
    ncol = 2 + args.topk  # image, mean, top-k channels
    fig, axes = plt.subplots(len(rows), ncol, squeeze=False,
                             figsize=(PANEL_IN * ncol, PANEL_IN * len(rows) + 0.3))
    for r, ((mean, chans), stride, f) in enumerate(zip(rows, net.out_strides, feats)):
        for ax in axes[r]:
            ax.axis('off')
        if r == 0:
            axes[r][0].imshow(rgb.numpy())
            axes[r][0].set_title('input', fontsize=7)
        axes[r][1].imshow(mean.numpy(), cmap='viridis')
        axes[r][1].set_title(f'stage {r} /{stride} {tuple(f.shape[1:])}\nchannel mean',
                             fontsize=6)
        for c, (ch, m) in enumerate(chans):
            axes[r][2 + c].imshow(m.numpy(), cmap='viridis')
            axes[r][2 + c].set_title(f'ch {ch} (#{c + 1} energy)', fontsize=6)
        logger.info(f'  stage {r} (stride {stride}): top channels {[c for c, _ in chans]}')
    fig.suptitle(label, fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.88, wspace=0.05,
                        hspace=0.4)
    _common.save(fig, args.out, DPI)
    logger.info(f'wrote {args.out}')


if __name__ == '__main__':
    main()
