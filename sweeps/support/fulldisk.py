"""A full disk says so in one line: the sweep's own ``error:`` line (``sweeper.entry``). What the
libraries under it would print about the same full disk first is kept off stderr:

- ``--- Logging error ---`` with three tracebacks: a log file (Hydra's job log under ``mlruns/``) that cannot
  be written. The standard library prints it from ``Handler.handleError``, its documented hook
  (``stdlib_compat.drop_logging_errors``).
- MLflow's ``SQLAlchemy database error`` record with its traceback: the tracking process reports the
  failed write itself, and the sweep names the full store.

Any other logging error or database error is printed as before.
"""

from __future__ import annotations

import errno
import logging

from sweeps.support import stdlib_compat

FULL_ERRNO = (errno.ENOSPC, errno.EDQUOT)
FULL_WORDS = ("database or disk is full", "No space left on device", "Disk quota exceeded")


def is_full(err: BaseException | None) -> bool:
    """Whether ``err``, or an error behind it, says the disk (or a quota) is full."""
    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, OSError) and err.errno in FULL_ERRNO:
            return True
        if any(words in str(err) for words in FULL_WORDS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


class _NotFull(logging.Filter):
    """Drops a record that only repeats a full disk's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_full(record.exc_info[1]))


def quiet() -> None:
    """Install both (once per process; idempotent). The first is process-wide: see ``stdlib_compat``."""
    stdlib_compat.drop_logging_errors(is_full)  # a log line lost to a full disk: the error line says so
    store_log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _NotFull) for f in store_log.filters):
        store_log.addFilter(_NotFull())
