import torch.nn as nn

from .linear import Linear2d


class Mlp2d(nn.Module):
    """Two-layer per-pixel MLP on NCHW tensors: fc1 -> act -> drop -> fc2 -> drop."""

    def __init__(self, in_features: int, hidden_features: int = None, out_features: int = None,
                 act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = Linear2d(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = Linear2d(hidden_features, out_features)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Mlp(nn.Module):
    """Two-layer MLP on channel-last tokens (..., C): fc1 -> act -> drop ->
    fc2 -> drop, with ``nn.Linear`` names (``fc1``/``fc2``) as timm, Swin,
    PVT, BiFormer and MLLA checkpoints use."""

    def __init__(self, in_features: int, hidden_features: int = None, out_features: int = None,
                 act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
