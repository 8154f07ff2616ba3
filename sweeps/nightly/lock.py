"""One copy of a nightly plan at a time: a kernel lock (``fcntl.flock``) on ``mlruns/nightly/<plan>/lock``.

Why ``flock`` and not ``filelock``: the kernel drops the lock when its holder dies, however it dies, so a
SIGKILLed run leaves nothing to clean up; and ``filelock`` truncates the file when it tries to lock it, which
would erase the holder's details (pid, host, start) that the "already running" message names. A lock file
that still holds details when we get the lock was left by a holder that died: we say so and take it over.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any


class AlreadyRunning(Exception):
    """Another process holds the plan's lock."""


class PlanLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.previous: dict[str, Any] = {}  # the details a dead holder left, if any

    def acquire(self) -> PlanLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _details(fd)
            os.close(fd)
            raise AlreadyRunning(describe(holder)) from None
        self.previous = _details(fd)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Empty the file (a clean end leaves no details behind), then unlock."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the lock
            self.fd = None

    def __enter__(self) -> PlanLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held(path: Path) -> bool:
    """Whether a running process holds the lock at ``path`` (taking it for a moment, shared, says no)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def _details(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
