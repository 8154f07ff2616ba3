"""The Optuna trial this process is running, if any: set by the sweeper, read by the task function.

A module of its own so that reading it imports nothing (grids and single runs never load Optuna).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Current(NamedTuple):
    trial: Any  # optuna.Trial
    study: str  # the study's name
    storage: str  # its storage URL or journal path
    pruner: dict[str, Any] | None  # the pruner's config, for other processes that report to the trial


_current: Current | None = None


def set_current(
    trial: Any | None, study: str = "", storage: str = "", pruner: dict[str, Any] | None = None
) -> None:
    global _current
    _current = Current(trial, study, storage, pruner) if trial is not None else None


def current() -> Current | None:
    """The trial this process runs, while it runs one."""
    return _current
