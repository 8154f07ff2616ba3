"""The standard library's private API and process-wide patch that sweeplab relies on, in one place; checked on
CPython 3.11, each with a test in ``tests/test_compat.py`` that fails when Python changes it.

- ``exit_now``: ``atexit._run_exitfuncs``. With torch and Lightning loaded, tearing every module down takes
  1.5 s here and does nothing useful at the end of a command, so the command leaves with ``os._exit``; the
  exit handlers still run first (log files flush, children are reaped). The standard library has no public
  call that runs them.
- ``leave_fork``: ``os._exit`` without the exit handlers, as a forked child must leave (documented so): the
  handlers it inherited are its parent's, not its own.
- ``drop_logging_errors``: ``logging.Handler.handleError``, the documented hook, replaced for the whole
  process. The handlers that meet a full disk are not ours to build: Hydra makes a job's log file handler
  from its ``hydra/job_logging`` config (which a user may replace) for every job, in whichever process runs
  the job. A handler's class is its only error policy, and no filter sees an error inside ``emit``, so
  nothing narrower reaches them.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

_plain_handle_error = logging.Handler.handleError


def exit_now(code: int | str | None) -> NoReturn:
    """Leave at once after the exit handlers (a string is printed to stderr and exits 1, as SystemExit)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def leave_fork(code: int) -> NoReturn:
    """End a forked child (what it printed flushed): never its parent's exit handlers or objects' teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the terminal went away, or the stream was closed
            pass
    os._exit(code)


def drop_logging_errors(dropped: Callable[[BaseException | None], bool]) -> None:
    """Every logging handler of this process says nothing about a record it could not write when
    ``dropped(error)`` is true; any other failure prints Python's ``--- Logging error ---`` as before.
    Calling it again replaces the test."""

    def handle_error(self: logging.Handler, record: logging.LogRecord) -> None:
        if not dropped(sys.exc_info()[1]):
            _plain_handle_error(self, record)

    logging.Handler.handleError = handle_error  # type: ignore[method-assign]
