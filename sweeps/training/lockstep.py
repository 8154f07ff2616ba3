"""The seeds of one configuration in lockstep, so that the pruner sees the mean over seeds after each epoch.

Each seed's Trainer runs in a thread of its own, and the threads take turns, one epoch each: only one runs
at any moment, with its own random state (saved and restored at each turn), so a seed trains exactly as it
would alone. When every seed has finished epoch e, the mean of their objective goes to the Optuna trial,
and if the pruner says so every seed stops at the start of its next turn.

Why turns rather than running the seeds one after another: a seed that ran alone to its end gives the
pruner nothing until then (the per-epoch mean needs every seed's epoch e). Why not truly parallel threads:
Lightning's loop and torch's global random state are not meant to be shared, and a trial's CPU or GPU is
already one slot of ``n_jobs``; seeds go in parallel by running trials in parallel. Why not Optuna's
``WilcoxonPruner`` (seeds as its instances): it decides only between whole seeds, never inside one, and it
would replace the pruner a search already chose (median, Hyperband...), which keeps working on the means.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from sweeps.outcome import Pruned


class Abandoned(BaseException):  # noqa: N818 - reads as what happened; not an Exception: the run is KILLED
    """This seed stopped because its configuration stopped (another seed failed, or Ctrl-C)."""


def random_state() -> dict[str, Any]:
    """The process's random state (torch, CUDA where used, numpy, Python), as ``seed_everything`` sets it."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class Lockstep:
    """Turns between ``len(states)`` seeds; ``report(epoch, mean)`` tells the trial, True to prune."""

    def __init__(
        self, states: list[dict[str, Any]], metric: str, report: Callable[[int, float], bool] | None
    ) -> None:
        self.states = states
        self.metric = metric
        self.report = report
        self.cond = threading.Condition()
        self.live = list(range(len(states)))
        self.turn = 0
        self.values: dict[int, list[float]] = {}
        self.reported: set[int] = set()
        self.pruned: tuple[int, float] | None = None
        self.stopped = ""  # why every seed stops (another seed failed, interrupted)

    def wait_turn(self, i: int) -> None:
        """Block until seed ``i`` may run; then its random state is the process's."""
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i or bool(self.stopped))
        set_random_state(self.states[i])
        self.check()

    def check(self) -> None:
        """Stop this seed if the configuration stops (raised inside its ``fit``)."""
        if self.stopped:
            raise Abandoned(self.stopped)
        if self.pruned:
            epoch, mean = self.pruned
            raise Pruned(epoch, f"mean {self.metric}", mean)

    def record(self, epoch: int, value: float) -> None:
        with self.cond:
            self.values.setdefault(epoch, []).append(value)

    def pass_turn(self, i: int) -> None:
        """Seed ``i`` finished an epoch: the next seed runs (and after the last one, the round's mean goes
        to the trial)."""
        self.states[i] = random_state()
        with self.cond:
            self._advance(i)

    def leave(self, i: int) -> None:
        """Seed ``i`` ended (finished, stopped early or failed): the others go on without it."""
        with self.cond:
            if i in self.live:
                if self.turn == i:
                    self._advance(i, leaving=True)
                else:
                    self.live.remove(i)
            self.cond.notify_all()

    def stop(self, reason: str) -> None:
        """Every seed stops at its next turn or batch (a seed failed; Ctrl-C in the main thread)."""
        with self.cond:
            self.stopped = self.stopped or reason
            self.cond.notify_all()

    def _advance(self, i: int, leaving: bool = False) -> None:
        position = self.live.index(i)
        later = self.live[position + 1 :]
        if leaving:
            self.live.remove(i)
        if not later:  # the round is complete
            self._close_round()
        self.turn = later[0] if later else (self.live[0] if self.live else -1)
        self.cond.notify_all()

    def _close_round(self) -> None:
        for epoch in sorted(set(self.values) - self.reported):
            self.reported.add(epoch)
            mean = float(np.mean(self.values[epoch]))
            if self.report and not self.pruned and self.report(epoch, mean):
                self.pruned = (epoch, mean)


class Turns(pl.Callback):
    """Seed ``index``'s side of the lockstep: records each epoch's objective and yields its turn between
    epochs; stops at the next batch when the configuration stops."""

    def __init__(self, lockstep: Lockstep, index: int) -> None:
        self.lockstep = lockstep
        self.index = index
        self.started = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.started:  # the first epoch runs in the turn the seed's thread began with
            self.lockstep.pass_turn(self.index)
            self.lockstep.wait_turn(self.index)
        self.started = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = self.lockstep.metric
        if not trainer.sanity_checking and metric in trainer.callback_metrics:
            self.lockstep.record(trainer.current_epoch + 1, float(trainer.callback_metrics[metric]))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if self.lockstep.stopped:
            raise Abandoned(self.lockstep.stopped)
