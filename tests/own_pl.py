"""examples/own_project's module written against ``pytorch_lightning`` instead of ``lightning`` (the tests
run both), and modules that break sweeplab's conventions, for the error tests."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from myproject.module import ClassifierSteps
from torch import nn


class PLClassifier(ClassifierSteps, pl.LightningModule):
    """The example's module on ``pytorch_lightning``."""


class NoOptimizer(pl.LightningModule):
    """Builds its own optimizer: the sweep's optimizer and lr could not reach it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters())
