"""Redaction of secrets before anything is logged: config values under secret-looking keys, and the
password of ``user:password@`` in any URI."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(
    r"(pass(word|wd)?|token|secret|credential|api[_-]?key|private[_-]?key|(^|[._-])key$)", re.I
)
URI_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I
)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def redact_text(text: str) -> str:
    """Mask the password of every ``scheme://user:password@`` in ``text``."""
    return URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


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
