"""What this process runs for a sweep: the Optuna trial (for pruning) and the sweep's deadline.

Set by the sweeper (or by a trial's own process from what the sweeper passed it) and read by the training
code. A module of its own that imports nothing heavy: grids and single runs never load Optuna for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trial:
    """The trial this process runs, and how other processes (DDP ranks) reach the same one."""

    trial: Any  # optuna.Trial
    study: str  # the study's name
    storage: str = ""  # its storage URL or journal path
    pruner: dict[str, Any] | None = None  # the pruner's config: a loaded study needs it to decide the same

    def spec(self) -> dict[str, Any]:
        """What a trial's own process needs to load it (``number`` picks the trial in the study)."""
        return {
            "study": self.study,
            "storage": self.storage,
            "pruner": self.pruner,
            "number": self.trial.number,
        }


_trial: Trial | None = None
_deadline: float | None = None


def set_trial(trial: Trial | None) -> None:
    global _trial
    _trial = trial


def current_trial() -> Trial | None:
    """The trial this process runs, while it runs one."""
    return _trial


def set_deadline(at: float | None) -> None:
    """``hydra.sweeper.deadline`` (a Unix time): a trial still training when it passes stops there."""
    global _deadline
    _deadline = float(at) if at else None


def deadline() -> float | None:
    """The deadline of the sweep this process runs trials for, if it has one."""
    return _deadline
