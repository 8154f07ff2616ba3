"""The Optuna trial this process is running, if any: set by the sweeper, read by the task function.

A module of its own so that reading it imports nothing (grids and single runs never load Optuna).
"""

from __future__ import annotations

from typing import Any

_current: tuple[Any, str, str] | None = None


def set_current(trial: Any | None, study: str = "", storage: str = "") -> None:
    global _current
    _current = (trial, study, storage) if trial is not None else None


def current() -> tuple[Any, str, str] | None:
    """(optuna trial, study name, storage URL) while this process runs an Optuna trial."""
    return _current
