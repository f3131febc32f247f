#!/usr/bin/env python
"""Create BEVFormer's temporal nuScenes info files (mmdet3d 1.x v2 layout).

    python tools/create_nuscenes_infos.py --root data/nuscenes --version v1.0-trainval
    python tools/create_nuscenes_infos.py --root data/nuscenes --version v1.0-mini
    python tools/create_nuscenes_infos.py --root data/demo/nuscenes --version v1.0-mini \
        --out-dir data/demo/nuscenes

Writes ``<out-dir or root>/nuscenes_infos_temporal_{train,val}.pkl`` (only
``_test.pkl`` for v1.0-test) from the official splits; the layout is
documented in ``mmvisbackbones/datasets/nuscenes_infos.py``.  Needs the
nuScenes devkit (``nuscenes-devkit``) and mmengine.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmvisbackbones.datasets.nuscenes_infos import (  # noqa: E402
    create_nuscenes_infos)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Create BEVFormer temporal nuScenes info files.')
    p.add_argument('--root', default='data/nuscenes',
                   help='nuScenes root holding <version>/ and samples/ '
                        '(default: data/nuscenes)')
    p.add_argument('--version', default='v1.0-trainval',
                   choices=['v1.0-trainval', 'v1.0-mini', 'v1.0-test'])
    p.add_argument('--out-dir', default=None,
                   help='output directory (default: the root)')
    p.add_argument('--prefix', default='nuscenes_infos_temporal',
                   help='file name prefix (default: nuscenes_infos_temporal)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        out = create_nuscenes_infos(args.root, version=args.version,
                                    out_dir=args.out_dir, prefix=args.prefix)
    except FileNotFoundError as e:
        raise SystemExit(f'create_nuscenes_infos: {e}')
    except ImportError as e:
        raise SystemExit(f'create_nuscenes_infos needs the nuScenes devkit '
                         f'and mmengine ({e}); run tools/setup_env.sh')
    for split in ('train', 'val', 'test'):
        if split in out:
            print(f'[{split}] {out["num_" + split]} samples -> {out[split]}')


if __name__ == '__main__':
    main()
