#!/usr/bin/env python
"""Generate the synthetic COCO / ADE20K demo datasets.

    python tools/make_demo_data.py --out data/demo            # both
    python tools/make_demo_data.py --out data/demo --coco     # COCO only
    python tools/make_demo_data.py --out data/demo --ade --num-train 32 \
        --num-val 8 --size 128 128 --seed 0 --force
    python tools/make_demo_data.py --out data/demo --nuscenes --frames-per-scene 16 \
        --cam-size 320 180      # nuScenes format (v1.0-mini tables, 6 cameras)

Writes ``<out>/coco`` (mmdet ``data_root``: ``train2017/``, ``val2017/``,
``annotations/instances_{train,val}2017.json``) and ``<out>/ade`` (mmseg
``data_root``: ``<out>/ade/ADEChallengeData2016``).  Existing data generated
with the same parameters is reused unless ``--force`` is given.  ``--nuscenes``
writes ``<out>/nuscenes`` instead (the BEV demo: v1.0-mini tables, six
camera images per frame, 10 scenes) and its BEVFormer info files.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmvisbackbones.datasets.demo_data import (  # noqa: E402
    CLASSES, make_ade_demo, make_coco_demo)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Generate tiny synthetic COCO / ADE20K demo datasets.')
    p.add_argument('--out', default='data/demo',
                   help='output directory (default: data/demo)')
    p.add_argument('--coco', action='store_true',
                   help='generate the COCO dataset (default: both)')
    p.add_argument('--ade', action='store_true',
                   help='generate the ADE20K dataset (default: both)')
    p.add_argument('--num-train', type=int, default=64)
    p.add_argument('--num-val', type=int, default=16)
    p.add_argument('--size', type=int, nargs=2, default=(128, 128),
                   metavar=('H', 'W'), help='image height and width')
    p.add_argument('--nuscenes', action='store_true',
                   help='generate the nuScenes-format BEV dataset (and its info files) '
                   'instead of COCO / ADE20K')
    p.add_argument('--frames-per-scene', type=int, default=16,
                   help='nuScenes: key frames per scene (10 scenes)')
    p.add_argument('--cam-size', type=int, nargs=2, default=(320, 180), metavar=('W', 'H'),
                   help='nuScenes: camera image width and height')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--force', action='store_true',
                   help='regenerate even if up-to-date data exists')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    both = not (args.coco or args.ade)
    kwargs = dict(num_train=args.num_train, num_val=args.num_val,
                  img_size=tuple(args.size), seed=args.seed,
                  force=args.force)
    out = os.path.abspath(args.out)
    if args.nuscenes:
        from mmvisbackbones.datasets import create_nuscenes_infos, make_nuscenes_demo
        root = os.path.join(out, 'nuscenes')
        s = make_nuscenes_demo(root, frames_per_scene=args.frames_per_scene,
                               img_size=tuple(args.cam_size), seed=args.seed, force=args.force)
        state = 'wrote' if s['generated'] else 'up to date, kept'
        print(f"[nuscenes] {state} {root}: {s['num_train_samples']} train / "
              f"{s['num_val_samples']} val frames x 6 cameras "
              f"({args.cam_size[0]}x{args.cam_size[1]}), {s['num_annotations']} boxes")
        infos = create_nuscenes_infos(root, version='v1.0-mini')
        for split in ('train', 'val'):
            print(f'[nuscenes]   {infos[split]}')
        return 0
    if both or args.coco:
        s = make_coco_demo(os.path.join(out, 'coco'), **kwargs)
        state = 'wrote' if s['generated'] else 'up to date, kept'
        print(f"[coco] {state} {s['root']}: {s['num_train']} train / "
              f"{s['num_val']} val images, {s['num_train_instances']} / "
              f"{s['num_val_instances']} instances, classes {list(CLASSES)}")
        print(f"[coco]   {s['train_ann_file']}")
        print(f"[coco]   {s['val_ann_file']}")
    if both or args.ade:
        s = make_ade_demo(os.path.join(out, 'ade'), **kwargs)
        state = 'wrote' if s['generated'] else 'up to date, kept'
        print(f"[ade] {state} {s['data_root']}: {s['num_train']} train / "
              f"{s['num_val']} val images; png labels {s['label_map']} "
              f"(reduce_zero_label=True -> classes 0..3)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
