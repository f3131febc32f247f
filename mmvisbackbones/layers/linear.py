import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear2d(nn.Linear):
    """A per-pixel linear layer on NCHW tensors (a 1x1 convolution).

    Its weight keeps ``nn.Linear``'s (out, in) shape, so state dicts of
    channel-last models load as they are; (out, in, 1, 1) conv weights are
    accepted too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + 'weight'
        w = state_dict.get(key)
        if w is not None and w.dim() == 4 and w.shape[2:] == (1, 1):
            state_dict[key] = w.flatten(1)
        return super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
