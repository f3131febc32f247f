"""Shared pieces of ``tools/train.py`` and ``tools/test.py`` (needs mmdet,
mmseg or mmdet3d, depending on the config)."""
import contextlib
import os
import os.path as osp
from typing import Iterable, List, Tuple

from mmengine.config import Config, DictAction

SCOPES = ('mmdet', 'mmseg', 'mmdet3d')


def config_scope(cfg: Config) -> str:
    """'mmdet', 'mmseg' or 'mmdet3d', from the config's ``default_scope`` (set
    by the OpenMMLab base configs every config here inherits)."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(
            f'config {cfg.filename} has default_scope={scope!r}; expected one of {SCOPES}. '
            "Inherit an mmdet:: or mmseg:: base config or set default_scope yourself.")
    return scope


def init_scope(cfg: Config) -> str:
    """Import mmvisbackbones and register the scope's modules."""
    import mmvisbackbones  # noqa: F401  (registers backbones + checkpoint allow-list)
    scope = config_scope(cfg)
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules
    elif scope == 'mmdet3d':
        from mmdet3d.utils import register_all_modules
    else:
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return scope


def _dataset_cfgs(ds) -> Iterable[dict]:
    """Leaf dataset configs inside wrappers (RepeatDataset, ConcatDataset, ...)."""
    if ds is None:
        return
    if isinstance(ds, (list, tuple)):
        for d in ds:
            yield from _dataset_cfgs(d)
        return
    if 'dataset' in ds:
        yield from _dataset_cfgs(ds['dataset'])
    elif 'datasets' in ds:
        yield from _dataset_cfgs(ds['datasets'])
    else:
        yield ds


def missing_data_paths(cfg: Config, loaders: Tuple[str, ...]) -> List[str]:
    """Paths a dataset of the given dataloaders needs but that do not exist."""
    missing = []
    for name in loaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for ds in _dataset_cfgs(loader.get('dataset')):
            root = ds.get('data_root') or ''
            paths = []
            if ds.get('ann_file'):
                paths.append(osp.join(root, ds['ann_file']))
            prefix = ds.get('data_prefix') or {}
            paths += [osp.join(root, v) for v in prefix.values() if isinstance(v, str) and v]
            if not paths and root:
                paths.append(root)
            missing += [p for p in paths if not osp.exists(p) and p not in missing]
    return missing


DATA_HELP = {
    'mmdet': ('COCO 2017 must be at data/coco (annotations/instances_{train,val}2017.json, '
              'train2017/, val2017/).'),
    'mmseg': ('ADE20K must be at data/ade/ADEChallengeData2016 (images/{training,validation}/, '
              'annotations/{training,validation}/).'),
    'mmdet3d': ('nuScenes must be at data/nuscenes (v1.0-trainval/ tables, samples/CAM_*/ '
                'images) with the BEVFormer info files nuscenes_infos_temporal_{train,val}.pkl '
                'beside them, made by `python tools/create_nuscenes_infos.py --root '
                'data/nuscenes --version v1.0-trainval` (v1.0-mini for the mini split).'),
}
_COCO_ADE_DEMO = '`python tools/make_demo_data.py --out data/demo` with the configs in configs/demo/'
DEMO_HELP = {
    'mmdet': _COCO_ADE_DEMO,
    'mmseg': _COCO_ADE_DEMO,
    'mmdet3d': '`bash tools/run_bev_demo.sh` (generated nuScenes-format data in data/demo/nuscenes)',
}


def check_data(cfg: Config, loaders: Tuple[str, ...], scope: str):
    """Exit with a clear message when the dataset is not where the config says."""
    missing = missing_data_paths(cfg, loaders)
    if missing:
        lines = '\n  '.join(missing)
        raise SystemExit(
            f'error: dataset not found. The config {cfg.filename} reads:\n  {lines}\n'
            f'{DATA_HELP[scope]} Link or download it there (or override data_root with '
            f'--cfg-options), or try the generated demo data: {DEMO_HELP[scope]}.')


def add_common_args(parser):
    """Options tools/train.py and tools/test.py share."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=24')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher for distributed runs')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def check_launcher(args):
    """On a machine without CUDA, ``--launcher pytorch`` runs over gloo
    (:class:`~mmvisbackbones.engine.MMVBRunner`) and needs torchrun's
    environment; slurm and mpi need GPUs.  Refuse early, with the fix."""
    launcher = getattr(args, 'launcher', 'none')
    if launcher == 'none':
        return
    import torch
    if torch.cuda.is_available():
        return
    from mmvisbackbones.engine.dist import cpu_launch_problem
    problem = cpu_launch_problem(launcher)
    if problem:
        raise SystemExit(f'error: {problem}')


@contextlib.contextmanager
def dist_session():
    """Around a tool's run: at the end of a distributed run every rank waits
    for the others (rank 0 may still be writing a checkpoint or the metrics)
    and the process group is destroyed; left to interpreter exit, gloo's
    threads abort the process (``terminate called without an active
    exception``); so does a DDP wrapper still alive then, hence the tool's
    runner must not outlive the block.  A rank that fails skips the wait, which its peers, blocked
    in a collective, would never reach; torchrun then stops them."""
    import gc

    import torch.distributed as dist
    try:
        yield
    except BaseException:
        if dist.is_available() and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
        raise
    if dist.is_available() and dist.is_initialized():
        # the DDP wrapper (its reducer holds the group) may sit in a reference
        # cycle: free it first, or its destructor runs after the group is
        # gone and aborts the process at exit
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def load_config(args) -> Config:
    """Config from ``args.config`` with ``--cfg-options``, the launcher and the
    work dir (``--work-dir``, else the config's, else ./work_dirs/<name>)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config):
    """The config's ``runner_type``, by default :class:`MMVBRunner`
    (mmengine's Runner plus CPU distributed runs, atomic checkpoint saves and
    exact resume)."""
    from mmengine.registry import RUNNERS
    import mmvisbackbones.engine  # noqa: F401  (registers MMVBRunner)
    if 'runner_type' not in cfg:
        cfg.runner_type = 'MMVBRunner'
    return RUNNERS.build(cfg)
