"""The error types a user sees as one line without a traceback: bad input (``ConfigError``, exit code 2,
before anything trains) and failures at run time (``TrackingError``, ``TrainingError``, exit code 1)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value, file or combination that cannot work. The message names the key and what is allowed."""

    exit_code = 2


class TrainingError(RuntimeError):
    """A failure that training found, not bad input (a range test whose loss diverged at once): one line
    and exit code 1, as for a run that diverged."""

    exit_code = 1


class TrackingError(RuntimeError):
    """The tracking process died, or the store refused a request, while the command ran: the input was fine
    (a store that cannot be opened at start-up is a ``ConfigError``), so the same command may work again."""

    exit_code = 1
