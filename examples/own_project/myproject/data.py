"""A plain LightningDataModule: generated Gaussian blobs in TensorDatasets behind ordinary DataLoaders."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


def blobs(n: int, features: int, classes: int, seed: int) -> TensorDataset:
    """``classes`` Gaussian clusters in ``features`` dimensions (targets are class indices)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=torch.Generator().manual_seed(0)) * 1.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, features, generator=g)
    return TensorDataset(x, y)


class BlobsData(L.LightningDataModule):
    """It says nothing about its task: sweeplab reads that from the config or from a batch."""

    def __init__(
        self, n: int = 600, features: int = 16, classes: int = 3, batch_size: int = 32, seed: int = 0
    ):
        super().__init__()
        self.n, self.features, self.classes = n, features, classes
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        self.train_set = blobs(self.n, self.features, self.classes, self.seed)
        self.val_set = blobs(self.n // 4, self.features, self.classes, self.seed + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
