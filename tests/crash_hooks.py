"""Hooks that kill the training process (tests/test_resume.py), loaded by a
config with custom_imports; armed by environment variables, so the same
config resumes without them:

* ``MMVB_KILL_AT=EPOCH,ITER``: SIGKILL before iteration ITER (0-based, within
  the epoch) of epoch EPOCH (0-based), i.e. in the middle of that epoch;
* ``MMVB_KILL_IN_SAVE=EPOCH``: SIGKILL half-way through writing the
  checkpoint of epoch EPOCH (1-based, as its file name).
"""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillHook(Hook):
    priority = 'HIGHEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        at = os.environ.get('MMVB_KILL_AT')
        if at and tuple(int(v) for v in at.split(',')) == (runner.epoch, batch_idx):
            runner.logger.info(f'KillHook: SIGKILL at epoch {runner.epoch} iter {batch_idx}')
            os.kill(os.getpid(), signal.SIGKILL)

    def before_save_checkpoint(self, runner, checkpoint):
        at = os.environ.get('MMVB_KILL_IN_SAVE')
        if not at or int(at) != checkpoint['meta']['epoch']:
            return
        from mmengine.fileio.backends import LocalBackend

        def half_put(backend, obj, filepath):  # the bytes go to disk, half of them
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            runner.logger.info(f'KillHook: SIGKILL while writing {filepath}')
            os.kill(os.getpid(), signal.SIGKILL)

        LocalBackend.put = half_put
