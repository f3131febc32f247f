#!/usr/bin/env python
"""Evaluate a checkpoint (COCO bbox/segm AP with mmdet's CocoMetric, ADE20K
mIoU with mmseg's IoUMetric, or whatever the config's test_evaluator is).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
    torchrun --nproc_per_node=8 tools/test.py CONFIG CHECKPOINT --launcher pytorch

Checkpoints written by mmengine's Runner load with ``weights_only=True``: the
types they hold besides tensors are allow-listed when mmvisbackbones is
imported (mmvisbackbones/utils/serialization.py).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmvisbackbones.tools_utils import check_data, init_scope, set_launcher_env  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    p.add_argument('config', help='config file path')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='where the evaluation log goes')
    p.add_argument('--out', help='dump raw predictions to this .pkl file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    set_launcher_env(args.launcher, args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
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
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    return metrics


if __name__ == '__main__':
    main()
