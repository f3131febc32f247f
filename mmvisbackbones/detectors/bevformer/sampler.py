"""A test-time sampler that keeps each scene's frames together on one rank.

BEVFormer carries its BEV from one frame to the next at test time, so every
rank must see consecutive frames. mmengine's ``DefaultSampler`` (shuffle
off) deals samples out round-robin (rank r gets r, r+W, r+2W, ...): with
more than one GPU no rank would ever see two consecutive frames, and the
temporal model would be evaluated without its history. This sampler gives
rank r one contiguous block of the dataset instead.

mmengine's result collection interleaves the ranks' results (rank 0's
first, rank 1's first, ...) and then drops the last ``W * n - len(dataset)``
entries as padding. The blocks are laid out so that exactly those entries
are the padding: the first ranks get ``n`` samples, the last ``p`` ranks
``n - 1`` samples plus one repeated sample at the end.
"""
import math
from typing import Iterator, Optional, Sized

from mmdet3d.registry import DATA_SAMPLERS
from mmengine.dist import get_dist_info
from torch.utils.data import Sampler

__all__ = ['ContiguousSampler']


@DATA_SAMPLERS.register_module()
class ContiguousSampler(Sampler):
    """Contiguous, unshuffled blocks per rank (see the module docstring).

    Args:
        dataset: the dataset.
        round_up: kept for mmengine's sampler interface; must stay True
            (the blocks are always padded to equal length).
    """

    def __init__(self, dataset: Sized, round_up: bool = True, seed: Optional[int] = None):
        if not round_up:
            raise ValueError('ContiguousSampler always pads the blocks to equal length '
                             '(mmengine collects results assuming equal parts)')
        rank, world = get_dist_info()
        self.dataset, self.rank, self.world_size = dataset, rank, world
        size = len(dataset)
        self.num_samples = math.ceil(size / world) if size else 0
        self.total_size = self.num_samples * world
        pad = self.total_size - size
        full = world - pad                     # ranks with num_samples real samples
        if rank < full:
            start = rank * self.num_samples
            self.indices = list(range(start, start + self.num_samples))
        else:
            start = full * self.num_samples + (rank - full) * (self.num_samples - 1)
            real = list(range(start, start + self.num_samples - 1))
            self.indices = real + [real[-1] if real else max(size - 1, 0)]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        pass
