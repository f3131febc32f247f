"""Random states in checkpoints, so that a resumed run repeats the
uninterrupted one (data augmentation, drop path and the detectors' samplers
all draw from the global generators, which mmengine does not save)."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

KEY = 'rng_state'


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves Python's, numpy's and torch's (CPU and CUDA) random states in
    every checkpoint and restores them when a run resumes from it.

    The checkpoint is written by rank 0, so in a distributed run every rank
    resumes with rank 0's states; a single-process run resumes exactly.
    ``MMVBRunner`` adds this hook unless the config already has it."""

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {'python': random.getstate(), 'numpy': np.random.get_state(),
                 'torch': torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint[KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(KEY)
        if state is None or not getattr(runner, '_resume', False):
            return  # a checkpoint without states, or fine-tuning from one
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            cuda = state['cuda']
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        runner.logger.info('Restored the random states saved in the checkpoint')
