#!/usr/bin/env python
"""Train a detector or segmentor whose config uses an mmvisbackbones backbone.

Works like mmdet's / mmseg's tools/train.py and picks their scope from the
config's ``default_scope``:

    python tools/train.py configs/vmamba_maskrcnn.py
    python tools/train.py CONFIG --work-dir work_dirs/x --amp --resume
    python tools/train.py CONFIG --cfg-options train_dataloader.batch_size=4

Multi-GPU / multi-node (torch.distributed):

    torchrun --nproc_per_node=8 tools/train.py CONFIG --launcher pytorch
    torchrun --nnodes=2 --node_rank=$RANK --master_addr=$ADDR --nproc_per_node=8 \
        tools/train.py CONFIG --launcher pytorch
    srun -p PARTITION -N2 --ntasks-per-node=8 --gres=gpu:8 \
        python tools/train.py CONFIG --launcher slurm
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmvisbackbones.tools_utils import check_data, init_scope, set_launcher_env  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a detector / segmentor')
    p.add_argument('config', help='config file path')
    p.add_argument('--work-dir', help='where logs and checkpoints go '
                   '(default: ./work_dirs/<config name>)')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the lr by total batch size / auto_scale_lr.base_batch_size')
    p.add_argument('--resume', nargs='?', type=str, const='auto',
                   help='resume from the given checkpoint, or with no value from the '
                   'latest checkpoint in the work dir')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. train_cfg.max_epochs=24')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                   help='job launcher for distributed training')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    set_launcher_env(args.launcher, args.local_rank)
    return args


def build_cfg(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print('AMP is already enabled in the config.')
        else:
            assert wrapper == 'OptimWrapper', \
                f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper}'
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('error: --auto-scale-lr needs auto_scale_lr.base_batch_size '
                             'in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'error: --resume checkpoint not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def check_device(args):
    """mmengine's AMP wrapper and its torch.distributed launchers need an
    accelerator; say so instead of failing deep inside mmengine."""
    import torch
    if torch.cuda.is_available():
        return
    if args.amp:
        raise SystemExit('error: --amp needs a GPU: mmengine\'s AmpOptimWrapper only runs '
                         'on cuda/npu/mlu/musa devices (no CUDA device is visible here)')
    if args.launcher in ('pytorch', 'slurm'):
        raise SystemExit(f'error: --launcher {args.launcher} needs GPUs: mmengine\'s '
                         'distributed init binds every rank to a CUDA device '
                         '(no CUDA device is visible here)')


def main(argv=None):
    args = parse_args(argv)
    check_device(args)
    cfg = build_cfg(args)
    scope = init_scope(cfg)
    check_data(cfg, ('train_dataloader', 'val_dataloader'), scope)
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
