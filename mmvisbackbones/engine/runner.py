"""mmengine's Runner with what long and distributed runs need beyond it."""
import copy
import glob
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.dist import is_distributed, master_only
from mmengine.model import is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS, RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model, find_latest_checkpoint
from torch.nn.parallel import DistributedDataParallel

from ..utils.checkpoint import extract_state_dict, load_checkpoint_file, strip_prefixes
from .dist import init_cpu_dist, refuse_sync_bn_on_cpu

TMP_PREFIX = '.tmp-'


def check_model_checkpoint(model, checkpoint: dict, filename: str) -> None:
    """Refuse a ``load_from`` / ``--resume`` / test checkpoint that would load
    nothing into ``model`` (mmengine only warns and goes on with random
    weights): a bare backbone checkpoint (no ``backbone.`` prefix), say, or
    another model's."""
    sd = strip_prefixes(extract_state_dict(checkpoint), prefix='')  # 'module.' only
    own = model.state_dict()
    if any(k in own for k in sd):
        return
    backbone = getattr(model, 'backbone', None)
    if backbone is not None:
        bb = backbone.state_dict()
        hits = sum(1 for k in sd if k in bb)
        if hits:
            raise RuntimeError(
                f'{filename!r} is a backbone checkpoint ({hits} of its {len(sd)} tensors are '
                f'{type(backbone).__name__} weights without the "backbone." prefix), not a whole '
                f'{type(model).__name__}: nothing of it would load here. Give it to the '
                "backbone instead: model.backbone.init_cfg=dict(type='Pretrained', "
                f"checkpoint={filename!r}), and drop load_from / the checkpoint argument")
    raise RuntimeError(
        f'no tensor of {filename!r} matches {type(model).__name__}: its keys look like '
        f'{sorted(sd)[:4]}, the model\'s like {list(own)[:4]}. Is it a checkpoint of this '
        'config\'s model?')


def find_resume_checkpoint(work_dir: str, logger=None) -> Optional[str]:
    """The checkpoint ``--resume`` (auto) continues from: the one mmengine's
    ``last_checkpoint`` file names when that file exists and is whole, else
    the newest ``*.pth`` of ``work_dir``.  Saves are atomic
    (:meth:`MMVBRunner.save_checkpoint`), so a file under its final name is
    complete, and temporary files are never picked."""
    named = find_latest_checkpoint(work_dir)
    if named and osp.isfile(named):
        return named
    found = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
             if not osp.basename(p).startswith(TMP_PREFIX)]
    if not found:
        return None
    newest = max(found, key=osp.getmtime)
    if logger is not None:
        why = f'names {named!r}, which does not exist' if named else 'is missing or empty'
        logger.warning(f'{osp.join(work_dir, "last_checkpoint")} {why}; resuming from the '
                       f'newest checkpoint in the work dir, {newest}')
    return newest


@RUNNERS.register_module()
class MMVBRunner(Runner):
    """mmengine's Runner, plus:

    * **distributed on CPUs**: with ``--launcher pytorch`` and no CUDA device
      the process group is created over gloo (mmengine's ``init_dist``
      would bind each rank to a GPU) and the model is wrapped in
      ``MMDistributedDataParallel`` without ``device_ids``; SyncBN there is
      refused with the layers named.  With CUDA nothing changes (nccl, one
      GPU per rank);
    * **atomic checkpoints**: written to a temporary file in the work dir,
      flushed, then renamed, so a kill during a save leaves the previous
      checkpoint whole and no half-written file under a checkpoint's name;
    * **auto-resume** (``--resume`` with no file) through
      :func:`find_resume_checkpoint`;
    * :class:`~mmvisbackbones.engine.RNGStateHook` added to the hooks, so a
      resumed run draws the same random numbers as the uninterrupted one.
    """

    def __init__(self, *args, **kwargs):
        hooks = list(kwargs.get('custom_hooks') or [])
        if not any((h.get('type') if isinstance(h, dict) else type(h).__name__) ==
                   'RNGStateHook' for h in hooks):
            hooks.append(dict(type='RNGStateHook'))
        kwargs['custom_hooks'] = hooks
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------ distributed
    def setup_env(self, env_cfg: dict) -> None:
        if self.distributed and not is_distributed() and not torch.cuda.is_available():
            init_cpu_dist(self.launcher, (env_cfg or {}).get('dist_cfg'))
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg: Optional[dict], model):
        if self.distributed and not torch.cuda.is_available() and not is_model_wrapper(model):
            refuse_sync_bn_on_cpu(model, self.cfg.get('sync_bn'))
            cfg = copy.deepcopy(dict(model_wrapper_cfg)) if model_wrapper_cfg else dict(
                broadcast_buffers=False,
                find_unused_parameters=self.cfg.get('find_unused_parameters', False))
            cfg.setdefault('type', 'MMDistributedDataParallel')
            wrapper = cfg['type'] if isinstance(cfg['type'], type) else \
                MODEL_WRAPPERS.get(cfg['type'])
            if wrapper is not None and issubclass(wrapper, DistributedDataParallel):
                cfg['device_ids'] = None  # CPU modules take no device ids
            self.logger.info(f'Distributed on CPUs (gloo, {self.world_size} ranks): '
                             f'{cfg["type"]} without device_ids')
            model_wrapper_cfg = cfg
        return super().wrap_model(model_wrapper_cfg, model)

    # ------------------------------------------------------------ checkpoints
    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        remote = ('://' in str(out_dir) or kwargs.get('backend_args')
                  or kwargs.get('file_client_args'))
        if remote:  # a storage backend does its own writes
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        tmp_name = f'{TMP_PREFIX}{os.getpid()}-{filename}'
        tmp, final = osp.join(out_dir, tmp_name), osp.join(out_dir, filename)
        try:
            super().save_checkpoint(out_dir, tmp_name, *args, **kwargs)
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            if osp.exists(tmp):
                os.remove(tmp)
        try:  # make the rename itself durable
            fd = os.open(out_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):  # noqa: B006 - mmengine's
        """mmengine's ``load_checkpoint`` (used by ``load_from``, ``--resume``
        and ``tools/test.py``), reading local files with our checks: a
        truncated or corrupted file, or one that would load nothing into the
        model, is an error that says what is wrong."""
        if '://' in str(filename) or not osp.exists(str(filename)):
            return super().load_checkpoint(filename, map_location, strict, revise_keys)
        checkpoint = load_checkpoint_file(filename)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        check_model_checkpoint(model, checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict,
                                               revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def load_or_resume(self) -> None:
        if self._has_loaded:
            return None
        if self._resume and self._load_from is None:
            resume_from = find_resume_checkpoint(self.work_dir, self.logger)
            if resume_from is None:
                self.logger.info(f'--resume: no checkpoint in {self.work_dir}; training '
                                 'starts from the beginning')
                return None
            self.logger.info(f'Auto resumed from the latest checkpoint {resume_from}.')
            self.resume(resume_from)
            self._has_loaded = True
            return None
        return super().load_or_resume()
