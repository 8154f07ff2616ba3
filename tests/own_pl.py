"""examples/own_project's module written against ``pytorch_lightning`` instead of ``lightning`` (the tests
run both), and modules that break sweeplab's conventions, for the error tests."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from myproject.data import blobs
from myproject.module import ClassifierSteps
from torch import nn
from torch.utils.data import DataLoader


class PLClassifier(ClassifierSteps, pl.LightningModule):
    """The example's module on ``pytorch_lightning``."""


class NoOptimizer(pl.LightningModule):
    """Builds its own optimizer: the sweep's optimizer and lr could not reach it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters())


class NoValData(pl.LightningDataModule):
    """Training data only: nothing to score an epoch on."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(blobs(64, 16, 3, 0), batch_size=16)


class DictData(pl.LightningDataModule):
    """Batches as dicts: no task declared and none to infer from a batch."""

    def _loader(self) -> DataLoader:
        x, y = blobs(64, 16, 3, 0).tensors
        return DataLoader([{"x": a, "y": b} for a, b in zip(x, y, strict=True)], batch_size=16)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()
