"""What ``SweeplabSweeper.sweep`` runs: an Optuna search for a search space, a grid otherwise."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn

from sweeps.support import fulldisk
from sweeps.support.errors import TrackingError
from sweeps.support.verbosity import quiet_sweep
from sweeps.sweeper.base import Sweep
from sweeps.sweeper.grid import run_grid

FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a quota


def is_search(arguments: list[str], params: Any) -> bool:
    """An Optuna search rather than a grid: a ``params`` space, an interval on the command line, or
    ``lr=auto`` (an lr range from the range test)."""
    return bool(params) or any("interval(" in a or a == "lr=auto" for a in arguments)


def sweep(base: Sweep, arguments: list[str]) -> list[list[JobReturn]]:
    """The sweep; a full disk, or the tracking process dying, stops it with one line and exit code 1 (what
    finished is kept: the next command resumes)."""
    fulldisk.quiet()  # that line only: no logging tracebacks about the same full disk before it
    searching = is_search(arguments, base.settings.params)
    quiet_sweep(searching, verbose=bool(base.config.get("verbose", False)))
    try:
        if searching:
            from sweeps.sweeper.optuna_loop import run_search  # Optuna loads only for a search

            return run_search(base, arguments)
        return run_grid(base, arguments)
    except (OSError, TrackingError) as err:
        full = disk_full(err)  # a tracking process that went down with the disk: the disk is the news
        if full is not None:
            print(f"error: {no_space(full, base.settings.storage_url)}", file=sys.stderr)
        elif isinstance(err, TrackingError):
            print(f"error: {err}", file=sys.stderr)
        else:
            raise
        raise SystemExit(1) from None


def disk_full(err: BaseException | None) -> OSError | None:
    """The full-disk error behind ``err`` (closing the runs after it can fail too: a broken pipe to a
    tracking process that went down with the disk), or None."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in FULL:
            return err
        err = err.__context__
    return None


def no_space(err: OSError, storage: str) -> str:
    """One line naming the file that could not be written (the study's folder when the error names none)."""
    where = Path(str(err.filename)) if err.filename else Path(storage.split("///")[-1]).parent
    if where.is_absolute() and where.is_relative_to(Path.cwd()):
        where = where.relative_to(Path.cwd())
    return (
        f"{os.strerror(err.errno or errno.ENOSPC)} ({where}): the sweep stopped; its finished trials and "
        "runs are kept; free some space and run the same command to resume"
    )
