"""What a sweep prints by default: one line when a job starts and one when it ends, then the leaderboard.

A sweep's jobs share one terminal: their per-epoch lines (and, in a search, each job's own "done" line beside
the search's "trial N finished") bury the lines that say how the sweep goes. ``verbose=true`` (or ``-v``)
keeps them all. A single run always shows its epochs. The lines are marked where they are logged
(``extra={"detail": "epoch" | "member" | "job"}``).
"""

from __future__ import annotations

import logging

LAUNCHER = "hydra._internal.core_plugins.basic_launcher"


class _NotLaunching(logging.Filter):
    """Hydra's basic launcher says "Launching 1 jobs locally" before every job a sweeper hands it; a search
    hands it one job at a time, so the line repeats for each trial and says nothing. Its "#N : overrides"
    line, the job's start line, stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Launching ")


class _Details(logging.Filter):
    """Drops the lines marked with one of ``hidden`` details."""

    def __init__(self, hidden: set[str]) -> None:
        super().__init__()
        self.hidden = hidden

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "detail", None) not in self.hidden


def quiet_sweep(search: bool, verbose: bool) -> None:
    """A sweep's own process (or a worker of one): drop the per-epoch lines and each seed's or fold's "done"
    line, and in a search each job's "done" line too (its "trial N finished" line says the same), unless
    ``verbose``."""
    launcher = logging.getLogger(LAUNCHER)
    if not any(isinstance(f, _NotLaunching) for f in launcher.filters):
        launcher.addFilter(_NotLaunching())
    ours = logging.getLogger("sweeplab")
    for old in [f for f in ours.filters if isinstance(f, _Details)]:
        ours.removeFilter(old)
    if not verbose:
        ours.addFilter(_Details({"epoch", "member", "job"} if search else {"epoch", "member"}))
