"""Redaction of secrets before anything is logged: config values under secret-looking keys, and the
password of ``user:password@`` in any URI."""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(
    r"(pass(word|wd)?|token|secret|credential|api[_-]?key|private[_-]?key|(^|[._-])key$)", re.I
)
# Also matches the escaped form Hydra logs overrides in (``http\\://user\\:password@host``).
URI_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.\-]*\\?://)(?P<user>[^:/@\s\\]*)(?P<colon>\\?:)(?P<password>[^@/\s]+)@", re.I
)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key.rsplit(".", 1)[-1]))


SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w.+~/-]*(pass(word|wd)?|token|secret|credential|api[_-]?key|private[_-]?key)[\w.]*)"
    r"(?P<sep>\s*[=:]\s*)(?P<value>[^\s,'\"\]\}]+)",
    re.I,
)


def redact_text(text: str) -> str:
    """Mask the password of every ``scheme://user:password@`` and the value of ``secret_key=value``."""
    text = URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}{m['colon']}{MASK}@", text)
    return SECRET_ASSIGNMENT.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def redact_log_records() -> None:
    """Redact every log record when it is made, whichever logger or handler it goes to.

    Hydra's launchers log each job's overrides, and Hydra re-creates its handlers for every job, so a
    handler filter would not last: the record factory does.
    """
    make = logging.getLogRecordFactory()
    if getattr(make, "sweeplab_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    factory.sweeplab_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` (dicts, lists, strings) with secrets masked; ``key`` is its dotted name."""
    if key and is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {k: redact(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, key) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_override(override: str) -> str:
    """``key=value`` from the command line, with the value masked if the key or a URI in it is secret."""
    key, sep, value = override.partition("=")
    if sep and is_secret_key(key.lstrip("+~")):
        return f"{key}={MASK}"
    return redact_text(override)
