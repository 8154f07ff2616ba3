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


class Validated(Tiny):
    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))


class Seen(pl.Callback):
    """Each validation as (epoch, training batches done in that epoch), and the training batches run."""

    def __init__(self) -> None:
        self.validations: list[tuple[int, int]] = []
        self.batches = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
            self.validations.append((trainer.current_epoch + 1, done))

    def on_train_batch_end(self, *args: object) -> None:
        self.batches += 1


class SignalIn(pl.Callback):
    """``signum`` to this process once, in epoch 3, at the start of training or validation batch ``index``
    (a signal lands while that batch runs)."""

    def __init__(self, signum: int, stage: str, index: int) -> None:
        self.signum, self.stage, self.index, self.sent = signum, stage, index, False

    def _maybe(self, trainer: pl.Trainer, stage: str, index: int) -> None:
        if not self.sent and not trainer.sanity_checking and trainer.current_epoch == 2:
            if (stage, index) == (self.stage, self.index):
                self.sent = True
                os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: object, batch: object, index: int) -> None:
        self._maybe(trainer, "train", index)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: object, batch: object, index: int, *a: int
    ) -> None:
        self._maybe(trainer, "validation", index)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
@pytest.mark.parametrize(
    ("stage", "index", "every"),
    [
        ("train", 1, 1.0),  # mid-epoch: stops at this batch's end
        ("train", 3, 1.0),  # the epoch's last batch: validation follows
        ("validation", 0, 1.0),
        ("validation", 2, 1.0),  # the last validation batch
        ("train", 1, 0.5),  # right before a mid-epoch validation
        ("validation", 1, 0.5),  # inside the mid-epoch validation
    ],
)
def test_a_run_stopped_anywhere_resumes_with_every_validation_once(
    tmp_path: Path, signame: str, stage: str, index: int, every: float
):
    """Lightning resumes a checkpoint taken right before validation, or inside it, in the next epoch
    without that validation: a requeued trial lost its epoch-3 report so on a real Slurm."""
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=8)  # 4 batches
    val = DataLoader(TensorDataset(torch.randn(24, 4), torch.randn(24, 1)), batch_size=8)  # 3 batches
    seen, stopped = Seen(), []
    for first in (True, False):
        stop = preemption.Preemption(tmp_path)
        sender = [SignalIn(getattr(signal, signame), stage, index)] if first else []
        trainer = pl.Trainer(
            max_epochs=5,
            val_check_interval=every,
            callbacks=[seen, *sender, stop],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        resume = preemption.resume_path(tmp_path)
        before = {s: signal.getsignal(s) for s in preemption.stop_signals()}
        try:
            with preemption.taken_over(stop):
                trainer.fit(Validated(), data, val, ckpt_path=resume, weights_only=True if resume else None)
        except preemption.Preempted:
            stopped.append(first)
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)
    assert stopped == [True]
    points = [2, 4] if every == 0.5 else [4]
    assert seen.validations == [(epoch, done) for epoch in range(1, 6) for done in points]
    assert seen.batches == 5 * 4  # no batch trained twice, none skipped
