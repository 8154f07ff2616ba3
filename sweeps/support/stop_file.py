"""A sweep's deadline can move earlier while it runs; this module reads where it moved to.

The deadline can move earlier while the sweep runs: ``python -m sweeps.nightly stop PLAN`` writes a Unix
time to the file named by ``SWEEPLAB_STOP_FILE``, which the night sets for its sweep (every process of the
sweep inherits it: trial workers and DDP ranks too).
"""

from __future__ import annotations

import os

STOP_FILE_ENV = "SWEEPLAB_STOP_FILE"


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
