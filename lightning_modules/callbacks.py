"""Small Lightning callbacks."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

log = logging.getLogger("sweeplab")

SHOWN = ("train_loss", "val_loss", "val_acc", "val_f1", "val_rmse", "val_r2")


class EpochProgress(pl.Callback):
    """One log line per epoch: a cheap alternative to a per-step progress bar for many short runs.

    The line for an epoch is written when the next epoch starts (or training ends) because Lightning calls
    callbacks' ``on_train_epoch_end`` before the module's, where the epoch's training metrics are logged.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._pending = False

    def _emit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._pending or not trainer.is_global_zero:
            return
        self._pending = False
        m = {**trainer.callback_metrics, **getattr(pl_module, "epoch_metrics", {})}
        values = "  ".join(f"{k} {float(m[k]):.4g}" for k in SHOWN if k in m)
        seconds = float(m["epoch_time"]) if "epoch_time" in m else 0.0
        log.info("%sepoch %d/%d  %s  (%.2fs)", self.prefix, self._epoch, trainer.max_epochs, values, seconds)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._emit(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = True
        self._epoch = trainer.current_epoch + 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._emit(trainer, pl_module)
