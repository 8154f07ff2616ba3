"""The template's ``SimpleDenseNet``, sized for generated blobs."""

from __future__ import annotations

import torch
from torch import nn


class SimpleDenseNet(nn.Module):
    def __init__(self, input_size: int = 16, lin1_size: int = 32, output_size: int = 3) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(input_size, lin1_size), nn.ReLU(), nn.Linear(lin1_size, output_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
