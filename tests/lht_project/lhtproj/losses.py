"""A loss with no ``__init__`` of its own: its signature is ``nn.Module``'s ``*args, **kwargs``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MeanLoss(nn.Module):
    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)
