"""Training-engine pieces on top of mmengine (no mmcv / mmdet needed):

* :class:`MMVBRunner` (``runner_type='MMVBRunner'``, what ``tools/train.py``
  and ``tools/test.py`` build): mmengine's Runner, plus distributed runs on
  CPU-only machines over gloo, atomic checkpoint saves, and an auto-resume
  that never picks a half-written file;
* :class:`AutocastOptimWrapper` (``optim_wrapper.type``): bf16 / fp16
  autocast on any device, CPU included (mmengine's AmpOptimWrapper is
  GPU-only);
* :class:`LayerDecayOptimWrapperConstructor` (``optim_wrapper.constructor``):
  layer-wise learning-rate decay over the blocks of a plain backbone;
* :class:`RNGStateHook`: the Python / numpy / torch random states in every
  checkpoint, restored on resume, so a resumed run repeats the uninterrupted
  one.
"""
from .dist import cpu_dist_available, cpu_launch_problem, init_cpu_dist, refuse_sync_bn_on_cpu
from .hooks import RNGStateHook
from .layer_decay import LayerDecayOptimWrapperConstructor
from .optim import AutocastOptimWrapper
from .runner import MMVBRunner, find_resume_checkpoint

__all__ = ['MMVBRunner', 'RNGStateHook', 'LayerDecayOptimWrapperConstructor', 'AutocastOptimWrapper', 'find_resume_checkpoint', 'init_cpu_dist',
           'cpu_dist_available', 'cpu_launch_problem', 'refuse_sync_bn_on_cpu']
