"""Helper processes (the tracking process, trial workers): a plain ``python -m MODULE FD`` on one end of a
socket pair. Plain, because multiprocessing's spawn would first re-import this command's ``__main__`` (Hydra
and all) in the child; the child sees EOF on the socket when its parent dies, however it dies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spawn(module: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Connection]:
    """``python -m module FD``; ``env`` is added to this process's environment."""
    ours, theirs = socket.socketpair()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        env={**os.environ, **(env or {}), "PYTHONPATH": path},
    )
    theirs.close()
    return process, Connection(ours.detach())
