"""torch.distributed on machines without CUDA: gloo instead of nccl.

mmengine 0.10's ``init_dist('pytorch')`` binds every rank to a CUDA device
(``torch.cuda.set_device``) before it creates the process group, so on a
CPU-only torch it fails whatever the backend.  :func:`init_cpu_dist` creates
the same process group from torchrun's environment over gloo; the Runner then
finds it initialised and goes on as usual.  That is how a multi-process (or
multi-node) setup is checked on CPUs before paying for GPUs.
"""
import datetime
import os
from typing import Optional

import torch
import torch.distributed as torch_dist

#: what torchrun (torch.distributed.run) exports to every rank
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def cpu_dist_available() -> bool:
    """Whether this torch can run a gloo process group."""
    return torch_dist.is_available() and torch_dist.is_gloo_available()


def cpu_launch_problem(launcher: str) -> Optional[str]:
    """What stops ``launcher`` on a machine without CUDA, or None: only
    torchrun (``--launcher pytorch``, with its environment) runs there."""
    if launcher != 'pytorch':
        return (f'--launcher {launcher} needs GPUs here (no CUDA device is visible); on CPUs '
                'start the ranks with torchrun and --launcher pytorch, e.g. torchrun '
                '--nproc_per_node=2 tools/train.py CONFIG --launcher pytorch')
    if not cpu_dist_available():
        return ('torch.distributed with the gloo backend is not available in this torch '
                'build; it is needed for distributed runs on CPUs')
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        return (f'--launcher pytorch needs the environment torchrun sets ({", ".join(missing)} '
                'missing): start with torchrun --nproc_per_node=N tools/train.py CONFIG '
                '--launcher pytorch')
    return None


def init_cpu_dist(launcher: str, dist_cfg: Optional[dict] = None, logger=None) -> None:
    """Initialise the default process group over gloo from torchrun's
    environment variables; ``dist_cfg`` is ``env_cfg.dist_cfg`` (its
    ``timeout`` in seconds is kept, an accelerator backend is replaced)."""
    problem = cpu_launch_problem(launcher)
    if problem:
        raise RuntimeError(problem)
    cfg = dict(dist_cfg or {})
    backend = cfg.pop('backend', 'nccl')
    if backend != 'gloo' and logger is not None:
        logger.info(f'No CUDA device: torch.distributed uses the gloo backend instead of '
                    f'{backend!r}')
    timeout = cfg.pop('timeout', None)
    kwargs = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def refuse_sync_bn_on_cpu(model: torch.nn.Module, sync_bn: Optional[str] = None) -> None:
    """SyncBN synchronises batch statistics with GPU collectives: torch's and
    mmcv's SyncBatchNorm refuse CPU tensors deep inside their forward.  Say
    so, with the layers and the fix, before training starts."""
    if sync_bn is not None:
        raise RuntimeError(
            f'cfg.sync_bn={sync_bn!r} converts BatchNorm to SyncBatchNorm, which needs CUDA; '
            'this distributed run is on CPUs (gloo). Remove sync_bn from the config for a '
            'CPU run')
    names = [n for n, m in model.named_modules() if type(m).__name__ == 'SyncBatchNorm']
    if names:
        shown = ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
        raise RuntimeError(
            f'SyncBN layers ({shown}) need CUDA: SyncBatchNorm synchronises statistics with GPU '
            'collectives, and this distributed run is on CPUs (gloo). Use norm_cfg=dict('
            "type='BN') for a CPU run, e.g. --cfg-options model.backbone.norm_cfg.type=BN "
            'for each config entry that sets SyncBN')
