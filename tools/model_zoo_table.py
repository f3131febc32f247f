#!/usr/bin/env python
"""Print (or write into README.md) the model-zoo table, generated from the
registry so that it never drifts from the code.

    python tools/model_zoo_table.py            # print
    python tools/model_zoo_table.py --write    # replace the table in README.md

FLOPs are multiply-accumulates of the backbone alone (simple feature
pyramid of the plain models included, no neck or head) counted by
``mmvisbackbones.utils.count_flops``: matrix products, convolutions and
attention from torch's FLOP counter, the scans and WKV by their upstream
formulas; element-wise work is not counted (fvcore's convention).

The table sits between the markers ``<!-- model-zoo:start -->`` and
``<!-- model-zoo:end -->``; tests/test_readme.py fails when it is stale.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
START, END = '<!-- model-zoo:start -->', '<!-- model-zoo:end -->'
CONSUMERS = 'Mask R-CNN, UperNet, DINO'


def table() -> str:
    import torch
    from mmvisbackbones import BACKBONES
    from mmvisbackbones.utils import count_flops
    rows = ['| name | type | params (backbone, ours) | ours as cls model | upstream '
            '| GFLOPs 224×224 | GFLOPs 1280×800 | strides | channels | consumers tested |',
            '|---|---|---|---|---|---|---|---|---|---|']
    for cls_name, cls in BACKBONES.items():
        for arch in cls.arch_zoo:
            if arch == 'test':
                continue
            with torch.device('meta'):
                net = cls(arch=arch)
            n = sum(p.numel() for p in net.parameters()) / 1e6
            g224, g1280 = (count_flops(net, (1, 3) + hw)['total'] / 1e9
                           for hw in ((224, 224), (800, 1280)))
            n_cls = (f'{cls.classification_params(arch) / 1e6:.1f} M'
                     if cls.has_classification_model else '—')
            rows.append(f'| `{cls.model_name}_{arch}` | `{cls_name}` | {n:.1f} M | {n_cls} | '
                        f'{cls.upstream_params.get(arch, "—")} | {g224:.1f} | {g1280:.0f} | '
                        f'{"/".join(map(str, net.out_strides))} | '
                        f'{"/".join(map(str, net.out_channels))} | {CONSUMERS} |')
    return '\n'.join(rows)


def render(readme: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f'README.md lacks the markers {START} / {END}')
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f'{head}{START}\n{table()}\n{END}{tail}'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--write', action='store_true')
    args = p.parse_args()
    path = osp.join(ROOT, 'README.md')
    if args.write:
        with open(path) as f:
            new = render(f.read())
        with open(path, 'w') as f:
            f.write(new)
        print(f'updated {path}')
    else:
        print(table())


if __name__ == '__main__':
    main()
