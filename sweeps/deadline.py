"""The wall-clock deadline of a sweep (``hydra.sweeper.deadline``, a Unix time): no trial starts that would
not end before it, and a trial still training when it passes stops there.

A module of its own, importing nothing heavy, so that the sweeper, its worker processes and the task
function all read the same value without loading Optuna or Lightning for it.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence

_deadline: float | None = None


class DeadlineReached(Exception):  # noqa: N818 - reads as what happened, like optuna.TrialPruned
    """A trial stopped because the sweep's deadline passed (closed as STOPPED, not as a failure)."""


def set_deadline(at: float | None) -> None:
    global _deadline
    _deadline = float(at) if at else None


def deadline() -> float | None:
    """The deadline of the sweep this process runs trials for, if it has one."""
    return _deadline


def expected_duration(durations: Sequence[float]) -> float:
    """How long the next trial will take: the median of the trials so far (0 when there are none)."""
    return statistics.median(durations) if durations else 0.0


def parse(
    until: str | None = None, hours: float | None = None, now: dt.datetime | None = None
) -> dt.datetime:
    """``--until HH:MM`` (its next occurrence, local time) or ``--hours H`` (fractions allowed) from now.

    Raises ValueError with a one-line message for anything else.
    """
    now = now or dt.datetime.now().astimezone()
    if hours is not None:
        if not hours > 0:
            raise ValueError(f"--hours {hours}: must be above 0")
        return now + dt.timedelta(hours=hours)
    try:
        clock = dt.time.fromisoformat(str(until))
    except ValueError:
        raise ValueError(f"--until {until}: expected a time of day as HH:MM (e.g. 07:00)") from None
    at = now.replace(hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=0)
    return at if at > now else at + dt.timedelta(days=1)
