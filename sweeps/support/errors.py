"""The error type for bad input: reported as one line, exit code 2, before anything trains."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value, file or combination that cannot work. The message names the key and what is allowed."""

    exit_code = 2


class TrainingError(RuntimeError):
    """A failure that training found, not bad input (a range test whose loss diverged at once): one line
    and exit code 1, as for a run that diverged."""

    exit_code = 1
