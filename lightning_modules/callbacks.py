"""Small Lightning callbacks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytorch_lightning as pl

log = logging.getLogger("sweeplab")

SHOWN = ("train_loss", "val_loss", "val_acc", "val_f1", "val_rmse", "val_r2")
EpochFn = Callable[[int, dict[str, float]], None]


class EpochEnd(pl.Callback):
    """Calls ``fn(epoch, metrics)`` once per finished training epoch, on rank 0, with all of its metrics.

    The call for an epoch happens when the next epoch starts (or training ends or fails) because Lightning
    calls callbacks' ``on_train_epoch_end`` before the module's, where the epoch's training metrics appear.
    """

    def __init__(self, fn: EpochFn) -> None:
        self.fn = fn
        self._pending: int | None = None
        self._started = time.perf_counter()
        self._seconds: float | None = None  # the pending epoch's, training and validation

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """What the epoch logged; ``epoch_time`` measured here where the module does not report it (a
        user's module: sweeplab's LitModule times its epochs itself)."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics.update(getattr(pl_module, "epoch_metrics", {}))
        seconds = self._seconds if self._seconds is not None else time.perf_counter() - self._started
        metrics.setdefault("epoch_time", seconds)
        return metrics

    def _emit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch, self._pending = self._pending, None
        if epoch is None or not trainer.is_global_zero:
            return
        self._last = self._metrics(trainer, pl_module)
        self.fn(epoch, self._last)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._emit(trainer, pl_module)
        self._started, self._seconds = time.perf_counter(), None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = trainer.current_epoch + 1
        self._seconds = time.perf_counter() - self._started

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._emit(trainer, pl_module)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Also the epoch that was stopped part-way (say, pruned after its validation): what it produced."""
        self._emit(trainer, pl_module)
        if trainer.is_global_zero:
            last = getattr(self, "_last", {})
            partial = {k: v for k, v in self._metrics(trainer, pl_module).items() if last.get(k) != v}
            if partial:
                self.fn(trainer.current_epoch + 1, partial)


def progress_line(prefix: str, max_epochs: int | None) -> EpochFn:
    """One log line per epoch: a cheap alternative to a per-step progress bar for many short runs."""

    def show(epoch: int, metrics: dict[str, float]) -> None:
        # a user's module logs its own names (val/acc)
        shown = [k for k in SHOWN if k in metrics] or sorted(k for k in metrics if "/" in k)
        values = "  ".join(f"{k} {metrics[k]:.4g}" for k in shown)
        log.info(
            "%sepoch %d/%s  %s  (%.2fs)",
            prefix,
            epoch,
            max_epochs,
            values,
            metrics.get("epoch_time", 0.0),
            extra={"detail": "epoch"},  # a sweep leaves these lines out unless verbose
        )

    return show
