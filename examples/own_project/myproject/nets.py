"""A plain torch network and loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SmallNet(nn.Module):
    def __init__(self, input_size: int = 16, hidden: int = 32, n_classes: int = 3) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_size, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SmoothedCrossEntropy(nn.Module):
    """Cross-entropy with label smoothing: a loss of the user's own."""

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.smoothing)
