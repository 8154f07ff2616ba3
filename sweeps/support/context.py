"""What this process runs for a sweep: the Optuna trial (for pruning) and the sweep's deadline.

Set by the sweeper (or by a trial's own process from what the sweeper passed it) and read by the training
code. A module of its own that imports nothing heavy: grids and single runs never load Optuna for it.

The deadline can move earlier while the sweep runs: ``python -m sweeps.nightly stop PLAN`` writes a Unix
time to the file named by ``SWEEPLAB_STOP_FILE``, which the night sets for its sweep (every process of the
sweep inherits it: trial workers and DDP ranks too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

STOP_FILE_ENV = "SWEEPLAB_STOP_FILE"


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
    """The deadline of the sweep this process runs trials for, if it has one: ``hydra.sweeper.deadline``,
    or the time in the stop file when that is earlier."""
    return None if _deadline is None else earliest(_deadline)


def earliest(at: float) -> float:
    """``at``, or the stop file's time when one is written and earlier."""
    stop = stop_time()
    return at if stop is None else min(at, stop)


def stop_time() -> float | None:
    """The time written to the stop file (``SWEEPLAB_STOP_FILE``), if one is set and written."""
    path = os.environ.get(STOP_FILE_ENV)
    return read_time(path) if path else None


def read_time(path: str | os.PathLike[str]) -> float | None:
    """The Unix time a stop file holds; None when it is missing or not (yet) a number."""
    try:
        with open(path) as file:
            return float(file.read().strip())
    except (OSError, ValueError):
        return None
