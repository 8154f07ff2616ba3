"""What sweeplab's LitModule checks inside itself, done for a user's module from the outside, through
Lightning's public callback hooks: the objective is among what it logs, and its loss stays finite.

Plain ``pytorch_lightning`` callbacks: Lightning calls callback hooks by name, so the Trainer of the
``lightning`` package runs them as well.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_modules.module import check_finite
from sweeps.support.errors import ConfigError


class MetricNotLogged(ConfigError):
    """The objective is not among the metrics the module logged in its first validation."""


class ObjectiveLogged(pl.Callback):
    """After the first validation, the objective must be among the logged metrics; the error names them.

    It runs before early stopping and checkpointing, whose own errors would not say what was logged.
    """

    def __init__(self, metric: str, source: str) -> None:
        self.metric = metric
        self.source = source
        self.checked = False

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.checked or trainer.sanity_checking:
            return
        self.checked = True
        logged = sorted(trainer.callback_metrics)
        if self.metric not in logged:
            names = ", ".join(logged) or "nothing"
            raise MetricNotLogged(
                f"objective.metric={self.metric}: {self.source} does not log it with self.log; after its "
                f"first validation it logged: {names}"
            )


class FiniteLoss(pl.Callback):
    """A non-finite training loss fails the run (Lightning trains on through NaN by default).

    The losses stay on the device and are read together every ``log_every_n_steps`` batches and at the
    epoch's end: a read inside a step would wait for the accelerator's queue to drain each time.
    """

    def __init__(self) -> None:
        self.window: list[torch.Tensor] = []
        self.first_step = 0  # the global step of the window's first loss

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self.window.append(loss.detach().float().mean().reshape(1))
        every = int(trainer.log_every_n_steps or 0)
        if every > 0 and (idx + 1) % every == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        """Lightning validates before the epoch-end hooks: the epoch's losses are checked first."""
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._check(trainer)

    def _check(self, trainer: Any) -> None:
        window, self.window = self.window, []
        first, self.first_step = self.first_step, int(trainer.global_step)
        check_finite(window, first)
