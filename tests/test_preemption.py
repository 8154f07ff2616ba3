"""A stop signal that Lightning acts on first still checkpoints and ends as ``Preempted``: SIGTERM at an
epoch's end is raised by Lightning's fit loop (``SIGTERMException``) before any batch-end check of ours,
as a requeued job on a real Slurm showed (tests/test_slurm_cluster.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from sweeps.training import preemption


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TermAtEpochEnd(pl.Callback):
    """SIGTERM to this process at the end of epoch 2, where Lightning's loop checks before ours does."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_that_lightning_raises_first_checkpoints_and_ends_as_preempted(tmp_path: Path):
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=8)
    stop = preemption.Preemption(tmp_path)
    trainer = pl.Trainer(
        max_epochs=5,
        callbacks=[stop, TermAtEpochEnd()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(preemption.Preempted, match="stopped by SIGTERM"), preemption.taken_over(stop):
            trainer.fit(Tiny(), train_dataloaders=data)
    finally:
        signal.signal(signal.SIGTERM, before)
    saved = torch.load(tmp_path / preemption.LAST, weights_only=True)
    assert saved["epoch"] == 2  # two epochs done: the resumed run trains from the third
