#!/usr/bin/env python
"""Train a detector or segmentor whose config uses an mmvisbackbones backbone.

Works like mmdet's / mmseg's tools/train.py and picks their scope from the
config's ``default_scope``:

    python tools/train.py configs/vmamba_maskrcnn.py
    python tools/train.py CONFIG --work-dir work_dirs/x --amp --resume
        (--amp: fp16 AMP with loss scaling on GPUs; bf16 autocast on a CPU)
    python tools/train.py CONFIG --cfg-options train_dataloader.batch_size=4

Multi-GPU / multi-node (torch.distributed; nccl on GPUs, gloo on a machine
without CUDA, where it checks a multi-process setup before paying for GPUs):

    torchrun --nproc_per_node=8 tools/train.py CONFIG --launcher pytorch
    torchrun --nnodes=2 --node_rank=$RANK --master_addr=$ADDR --nproc_per_node=8 \
        tools/train.py CONFIG --launcher pytorch
    srun -p PARTITION -N2 --ntasks-per-node=8 --gres=gpu:8 \
        python tools/train.py CONFIG --launcher slurm
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvisbackbones.tools_utils import (add_common_args, build_runner, check_data,  # noqa: E402
                                        check_launcher, dist_session, init_scope,
                                        load_config)


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
    add_common_args(p)
    return p.parse_args(argv)


def build_cfg(args):
    cfg = load_config(args)
    if args.amp:
        import torch
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper in ('AmpOptimWrapper', 'AutocastOptimWrapper'):
            print('AMP is already enabled in the config.')
        elif wrapper != 'OptimWrapper':
            raise SystemExit(f'error: --amp needs optim_wrapper.type OptimWrapper, got {wrapper}')
        elif torch.cuda.is_available():
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
        else:  # mmengine's AmpOptimWrapper is GPU-only
            print('--amp without a GPU: bf16 autocast on the CPU (AutocastOptimWrapper)')
            cfg.optim_wrapper.type = 'AutocastOptimWrapper'
            cfg.optim_wrapper.dtype = 'bfloat16'
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
    """On CPUs distributed runs go through torchrun; say so instead of
    failing deep inside mmengine."""
    check_launcher(args)


def main(argv=None):
    args = parse_args(argv)
    check_device(args)
    cfg = build_cfg(args)
    scope = init_scope(cfg)
    check_data(cfg, ('train_dataloader', 'val_dataloader'), scope)
    with dist_session():
        build_runner(cfg).train()


if __name__ == '__main__':
    main()
