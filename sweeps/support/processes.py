"""Helper processes, and telling whether a process still runs.

Helpers (the tracking process, trial workers) are a plain ``python -m MODULE FD`` on one end of a socket
pair. Plain, because multiprocessing's spawn would first re-import this command's ``__main__`` (Hydra and
all) in the child; the child sees EOF on the socket when its parent dies, however it dies.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from sweeps.support import interrupt

ROOT = Path(__file__).resolve().parents[2]  # the project: conf/, and what a child needs on PYTHONPATH


def python_path() -> str:
    """``PYTHONPATH`` for a child command: this project first, then whatever was there."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def spawn(
    module: str, env: dict[str, str] | None = None, also: socket.socket | None = None
) -> tuple[subprocess.Popen, Connection]:
    """``python -m module FD [FD2]``; ``env`` is added to this process's environment; ``also``, a socket
    the child inherits too (FD2; the caller closes its copy)."""
    ours, theirs = socket.socketpair()
    fds = [theirs.fileno(), *([also.fileno()] if also else [])]
    with interrupt.spawning():  # the terminal's Ctrl-C is its parent's to act on (``interrupt.helper``)
        process = subprocess.Popen(
            [sys.executable, "-m", module, *map(str, fds)],
            pass_fds=fds,
            env={**os.environ, **(env or {}), "PYTHONPATH": python_path()},
        )
    theirs.close()
    return process, Connection(ours.detach())


def alive(pid: int, start: str) -> bool:
    """Whether process ``pid`` still runs and is the one that started (same start time, where known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or process_start(pid) == start


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def pid_tags() -> dict[str, str]:
    """The tags that name this process as a run's owner (a later command tells a dead owner by them)."""
    return {"sweeplab.pid": str(os.getpid()), "sweeplab.pid_start": process_start(os.getpid())}


def host() -> str:
    """This machine's name in trial records; ``SWEEPLAB_HOST`` overrides it where machines share a
    hostname (containers), since a trial of "this host" whose pid is not running here is failed at once."""
    return os.environ.get("SWEEPLAB_HOST") or socket.gethostname()


def holders(path: str | Path, exclude: set[int]) -> list[str]:
    """``pid N (command)`` of the processes of this machine, but ``exclude``, that have ``path`` open (Linux
    /proc): who may hold the lock on a SQLite file, which SQLite cannot say. Empty where unknown."""
    target, found = os.path.realpath(path), []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid in exclude:
            continue
        try:
            if any(os.path.realpath(fd) == target for fd in (entry / "fd").iterdir()):
                words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
                found.append(f"pid {pid} ({' '.join(words)[:80]})")
        except OSError:  # gone, or not ours to read
            continue
    return found
