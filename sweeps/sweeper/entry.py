"""What ``SweeplabSweeper.sweep`` runs: an Optuna search for a search space, a grid otherwise."""

from __future__ import annotations

from typing import Any

from hydra.core.utils import JobReturn

from sweeps.sweeper.base import Sweep
from sweeps.sweeper.grid import run_grid


def is_search(arguments: list[str], params: Any) -> bool:
    """An Optuna search rather than a grid: a ``params`` space, an interval on the command line, or
    ``lr=auto`` (an lr range from the range test)."""
    return bool(params) or any("interval(" in a or a == "lr=auto" for a in arguments)


def sweep(base: Sweep, arguments: list[str]) -> list[list[JobReturn]]:
    if is_search(arguments, base.settings.params):
        from sweeps.sweeper.optuna_loop import run_search  # Optuna loads only for a search

        return run_search(base, arguments)
    return run_grid(base, arguments)
