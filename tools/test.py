#!/usr/bin/env python
"""Evaluate a checkpoint (COCO bbox/segm AP with mmdet's CocoMetric, ADE20K
mIoU with mmseg's IoUMetric, or whatever the config's test_evaluator is).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
    python tools/test.py CONFIG --untrained      # the model as initialised: the baseline
    torchrun --nproc_per_node=8 tools/test.py CONFIG CHECKPOINT --launcher pytorch

Checkpoints written by mmengine's Runner load with ``weights_only=True``: the
types they hold besides tensors are allow-listed when mmvisbackbones is
imported (mmvisbackbones/utils/serialization.py).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvisbackbones.tools_utils import (add_common_args, build_runner, check_data,  # noqa: E402
                                        check_launcher, dist_session, init_scope,
                                        load_config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    p.add_argument('config', help='config file path')
    p.add_argument('checkpoint', nargs='?', help='checkpoint file')
    p.add_argument('--untrained', action='store_true',
                   help='evaluate the model as initialised (its init_weights, the config\'s '
                   'seed; pretrained backbone weights included if the config names them) '
                   'instead of a checkpoint: the baseline a trained checkpoint must beat')
    p.add_argument('--work-dir', help='where the evaluation log goes')
    p.add_argument('--out', help='dump raw predictions to this .pkl file')
    add_common_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.untrained == (args.checkpoint is not None):
        raise SystemExit('error: give a CHECKPOINT or --untrained (not both)')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint not found: {args.checkpoint}')
    check_launcher(args)
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    scope = init_scope(cfg)
    check_data(cfg, ('test_dataloader', ), scope)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit('error: --out must be a .pkl file')
        cfg.test_evaluator = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) \
            else [cfg.test_evaluator]
        dump = 'DumpDetResults' if scope == 'mmdet' else 'DumpResults'
        cfg.test_evaluator.append(dict(type=dump, out_file_path=args.out))
    with dist_session():
        metrics = evaluate(cfg, args.untrained)
    return metrics


def evaluate(cfg, untrained: bool):
    """Build the runner and test; the runner (and its DDP wrapper) is gone
    when this returns, before the process group is destroyed."""
    runner = build_runner(cfg)
    if untrained:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        model.init_weights()
    return runner.test()


if __name__ == '__main__':
    main()
