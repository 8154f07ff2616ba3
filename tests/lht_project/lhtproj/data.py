"""A DataModule in the template's style: it exposes ``num_classes`` (not ``n_classes``), splits one data set
with ``random_split`` (so the classes cannot be counted from a ``TensorDataset``) and has a test split."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset, random_split


def blobs(n: int, seed: int) -> TensorDataset:
    """3 overlapping Gaussian clusters in 16 dimensions (hard enough that optimizers differ)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)) * 0.6
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(centres[y] + torch.randn(n, 16, generator=g), y)


class BlobsDataModule(L.LightningDataModule):
    def __init__(self, n: int = 256, batch_size: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)

    @property
    def num_classes(self) -> int:
        return 3

    def setup(self, stage: str | None = None) -> None:
        n = self.hparams.n
        parts = [n, n // 2, n // 2]
        split = random_split(blobs(sum(parts), 1), parts, generator=torch.Generator().manual_seed(42))
        self.data_train, self.data_val, self.data_test = split

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data_train, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data_val, batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data_test, batch_size=self.hparams.batch_size)
