"""Ending a night early: ``python -m sweeps.nightly stop PLAN`` moves the running night's deadline to now.

The night names a stop file to its sweep (``SWEEPLAB_STOP_FILE``, inherited by every process of the sweep);
``stop`` writes the current time there. From then on no trial starts, and a trial still training stops
within about a second, as at the deadline (queued to run again next night); the morning report follows.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sweeps.nightly.lock import held
from sweeps.support.errors import ConfigError
from sweeps.support.stop_file import STOP_FILE_ENV, read_time


def stop_file(plan_dir: Path) -> Path:
    return plan_dir / "stop"


def environment(plan_dir: Path) -> dict[str, str]:
    """For the night's sweep: where a stop is written. A stop file left by an earlier night is removed."""
    stop_file(plan_dir).unlink(missing_ok=True)
    return {STOP_FILE_ENV: str(stop_file(plan_dir))}


def stopped_at(plan_dir: Path) -> str | None:
    """When the night was stopped early (ISO time), or None; the stop file is removed."""
    path = stop_file(plan_dir)
    at = read_time(path)
    if at is None:
        return None
    path.unlink(missing_ok=True)
    return dt.datetime.fromtimestamp(at).astimezone().isoformat()


def request(plan: str, plan_dir: Path) -> str:
    """Write the stop for ``plan``'s running night; what was done, in one line.

    Raises ConfigError when no night of the plan runs here (its lock is free), so that a stop is never
    left behind for a night that has not started.
    """
    lock = plan_dir / "lock"
    if not held(lock):
        raise ConfigError(f"plan {plan} is not running here (no night holds {lock})")
    now = time.time()
    tmp = stop_file(plan_dir).with_suffix(".tmp")
    tmp.write_text(f"{now}\n")
    tmp.replace(stop_file(plan_dir))  # whole, or not at all: a reader never sees half a number
    when = dt.datetime.fromtimestamp(now).astimezone()
    return (
        f"plan {plan}: stop requested at {when:%Y-%m-%d %H:%M:%S}; no new trial starts, a running trial "
        "stops within seconds, then the report is written"
    )
