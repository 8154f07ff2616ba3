"""Callbacks of a run: the objective's history; and for a trial, pruning (each epoch's objective goes to the
Optuna trial, which may stop the run there) and the sweep's deadline (a trial still training when it passes
stops there).

optuna-integration's Lightning callback imports ``lightning.pytorch``, whose classes do not mix with a
``pytorch_lightning.Trainer`` (two packages ship the same Lightning; a module of one is refused by the
other's Trainer), hence these few lines.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import pytorch_lightning as pl

from sweeps.outcome import DeadlineReached, Pruned
from sweeps.support.stop_file import earliest


class ObjectiveHistory(pl.Callback):
    """The objective's value at each validation, so that a run's best and last epochs are known whatever
    else is on (a ModelCheckpoint only exists with ``checkpoint=true`` and an output folder)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.values: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self.metric in trainer.callback_metrics:
            self.values.append(float(trainer.callback_metrics[self.metric]))

    def best(self, mode: str) -> float:
        """The best finite value (``mode`` max or min); NaN when there is none."""
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return math.nan
        return max(finite) if mode == "max" else min(finite)

    def last(self) -> float:
        return self.values[-1] if self.values else math.nan


class OptunaPruning(pl.Callback):
    """Reports each epoch's objective to ``trial`` and stops the run when the pruner says so.

    Under DDP only the first process holds the trial (``trial=None`` elsewhere): it decides, and the
    decision is broadcast so that every process stops at the same epoch.
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch + 1
        value = float(trainer.callback_metrics[self.metric])
        prune = False
        if self.trial is not None:
            self.trial.report(value, epoch)
            prune = self.trial.should_prune()
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            raise Pruned(epoch, self.metric, value)


class StopAtDeadline(pl.Callback):
    """Stops a trial that is still training when the sweep's deadline passes (checked after each batch:
    a clock read; once a second also the stop file, which can move the deadline earlier)."""

    def __init__(self, at: float) -> None:
        self.deadline = self.at = at
        self.checked = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if time.monotonic() - self.checked >= 1.0:
            self.checked = time.monotonic()
            self.at = earliest(self.deadline)
        late = time.time() >= self.at
        if trainer.world_size > 1:  # DDP: every process stops at the same batch, by the first one's clock
            late = trainer.strategy.broadcast(late, src=0)
        if late:
            when = datetime.fromtimestamp(self.at).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            raise DeadlineReached(f"stopped at the deadline {when} in epoch {trainer.current_epoch + 1}")


TRAINED_KEYS = ("lr", "betas", "momentum", "weight_decay", "eps")


def trained_params(optimizers: list[Any], schedulers: list[Any]) -> dict[str, str]:
    """What the run trains with, read from the optimizers Lightning built (``configure_optimizers``): the
    class and, from the first parameter group, the learning rate (before any schedule moved it), betas,
    momentum, weight decay; and the schedule's class (``none`` without one)."""
    if not optimizers:
        return {}
    opt = optimizers[0]
    group = opt.param_groups[0]
    params = {"trained.optimizer": type(opt).__name__}
    values = {**group, "lr": group.get("initial_lr", group.get("lr"))}
    for key in TRAINED_KEYS:
        if key in values:
            value = values[key]
            params[f"trained.{key}"] = str(tuple(float(v) for v in value) if key == "betas" else float(value))
    if len(optimizers) > 1:
        params["trained.optimizers"] = ",".join(type(o).__name__ for o in optimizers)
    params["trained.scheduler"] = type(schedulers[0].scheduler).__name__ if schedulers else "none"
    return params


class TrainedWith(pl.Callback):
    """Records on the run the optimizer and schedule actually built, as ``trained.*`` params: whatever a
    config says, the record then shows what trained (a module may build its optimizer any way it likes)."""

    def __init__(self, record: Any) -> None:
        self.record = record  # ``record(params)``: logs the run's params

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = trained_params(list(trainer.optimizers), list(trainer.lr_scheduler_configs))
        if params:
            self.record(params)
