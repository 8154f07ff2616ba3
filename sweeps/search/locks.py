"""Locks between the processes (and machines) that share a study: creating the storage's tables and the
study, and claiming trials.

``RDBStorage`` creates its tables and ``create_study(load_if_exists=True)`` its study with no lock, so
workers starting at the same instant on an empty database fail with duplicate-key errors. A lock rather
than retrying the known errors: the errors differ by backend and by step (tables, alembic stamp, study
row), a lock covers them all and costs one round trip. PostgreSQL: an advisory lock held on one connection
per process; a journal or SQLite file: a file lock beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

_connections: dict[str, Any] = {}
_file_locks: dict[str, Any] = {}
_held: dict[str, int] = {}


def driver_url(url: str) -> str:
    """The URL for SQLAlchemy: ``postgresql://`` already means psycopg 3 (SQLAlchemy 2.1), the driver sweeplab
    installs, as in Optuna's CLI and optuna-dashboard; a ``postgresql+psycopg2://`` URL from older settings
    is read with psycopg 3 too (psycopg2 is no longer installed)."""
    old = "postgresql+psycopg2://"
    return "postgresql+psycopg://" + url.removeprefix(old) if url.startswith(old) else url


def libpq_url(url: str) -> str:
    """The same database as a libpq URL (no SQLAlchemy driver name), for ``psycopg.connect``."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"sweeplab:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def lock(url: str, name: str = "create") -> Iterator[None]:
    """Exclusive between processes (and machines, for PostgreSQL) for ``name``; re-entrant in a process."""
    ident = f"{url}|{name}"
    if _held.get(ident):
        _held[ident] += 1
        try:
            yield
        finally:
            _held[ident] -= 1
        return
    if url.startswith("postgresql"):
        conn = _pg_lock(url, name)
        release: Callable[[], None] = lambda: _pg_unlock(conn, name)  # noqa: E731
    else:
        path = url.split("///", 1)[1] if url.startswith("sqlite:///") else "" if "://" in url else url
        if not path or path == ":memory:":  # another database (MySQL, ...): its own row locks only
            release = lambda: None  # noqa: E731
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lock_path = f"{path}.{_file_part(name)}.lock"
            file_lock = _file_locks.setdefault(ident, FileLock(lock_path, timeout=600))
            file_lock.acquire()
            release = file_lock.release
    _held[ident] = 1
    try:
        yield
    finally:
        _held[ident] = 0
        release()


def _file_part(name: str) -> str:
    """``name`` as part of a file name: a study's name may hold spaces, slashes (a path it was given) or
    anything else. Names that differ only there share a lock, which only serialises them."""
    return re.sub(r"[^A-Za-z0-9_.=+:-]+", "_", name)[:120]


def _pg_connection(url: str) -> Any:
    import psycopg

    conn = _connections.get(url)
    if conn is None or conn.closed:
        conn = psycopg.connect(libpq_url(url), autocommit=True)
        _connections[url] = conn
    return conn


def _pg_lock(url: str, name: str) -> Any:
    """The lock, on this process's lock connection. A first connection that fails raises (the caller says
    the database cannot be opened); one that was lost (the server restarted) is made again, with the
    storage's back-off (``retry``)."""
    from sweeps.search.retry import DEFAULT_SECONDS, Retry

    def take() -> Any:
        conn = _pg_connection(url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (_key(name),))
        except Exception:
            _connections.pop(url, None)
            conn.close()
            raise
        return conn

    if url not in _connections:
        return take()
    return Retry(url, retry_seconds.get(url, DEFAULT_SECONDS)).call("lock", take)


retry_seconds: dict[str, float] = {}  # the storage's retry time, per URL (``study.rdb_storage`` sets it)


def _pg_unlock(conn: Any, name: str) -> None:
    """A lock whose connection was lost went with it (the server ends a dead session's locks)."""
    import psycopg

    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_key(name),))
    except psycopg.Error:
        conn.close()
