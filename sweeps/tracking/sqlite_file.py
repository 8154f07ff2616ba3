"""A SQLite MLflow store that a kill cannot leave half-built, created or upgraded under the store's lock.

MLflow's schema migrations take a second or more and are not crash-safe: a process killed during them
leaves a half-migrated ``mlflow.db`` that every later command refuses (``table _alembic_tmp_tags already
exists``, ``duplicate column name``, ``out-of-date database schema``). So a new store is created and
migrated in a temporary file beside it and renamed into place (a rename within a folder is atomic); a store
that a newer MLflow must upgrade is copied, the copy upgraded (MLflow's own ``mlflow db upgrade``) and
swapped in, the old one kept as a dated backup. What a killed creation left (``.mlflow.db.*.tmp``) is
removed by the next one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("sweeplab")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _clear_leftovers(path: Path) -> None:
    """Temporary files of creations or upgrades that were killed (the caller holds the store's lock)."""
    for left in path.parent.glob(f".{path.name}.*.tmp*"):
        left.unlink(missing_ok=True)


def create(path: Path, client_type: Any) -> None:
    """A new store at ``path``: MLflow creates and migrates it in a temporary file, then it is renamed in."""
    _clear_leftovers(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    client_type(tracking_uri=f"sqlite:///{temporary}").search_experiments(max_results=1)  # creates it
    os.replace(temporary, path)


def upgrade(path: Path) -> Path:
    """Upgrade the store at ``path`` in a copy, swap it in; returns the backup of the old one."""
    _clear_leftovers(path)
    temporary = _temporary(path)
    with (
        contextlib.closing(sqlite3.connect(path)) as source,
        contextlib.closing(sqlite3.connect(temporary)) as copy,
    ):
        source.backup(copy)  # a consistent copy, whatever the journal holds
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", f"sqlite:///{temporary}"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        temporary.unlink(missing_ok=True)
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise RuntimeError(f"mlflow db upgrade failed: {lines[-1]}")
    backup = path.with_name(f"{path.name}.{dt.datetime.now():%Y%m%d-%H%M%S}.bak")
    os.link(path, backup)  # the old store stays, under its dated name
    os.replace(temporary, path)
    return backup


def head_revision() -> str:
    """The schema revision this MLflow writes (alembic's head of MLflow's migrations)."""
    import mlflow.store
    from alembic.script import ScriptDirectory

    migrations = Path(mlflow.store.__file__).parent / "db_migrations"
    return str(ScriptDirectory(str(migrations)).get_current_head())


def revision(path: Path) -> str | None:
    """The schema revision of the store at ``path`` (None where it has none: not MLflow's, or damaged; MLflow
    then says so itself)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            row = db.execute("select version_num from alembic_version").fetchone()
        except sqlite3.DatabaseError:
            return None
    return row[0] if row else None


def ready(path: Path, client_type: Any) -> None:
    """Create the store at ``path`` if there is none, or upgrade it if this MLflow needs that; the caller
    holds the store's lock (``store._store_lock``). Read without MLflow, which keeps its connections to a
    file open (one engine per URI) and would go on writing to the old one after the swap."""
    if not path.exists():
        create(path, client_type)
        return
    found = revision(path)
    if found is None or found == head_revision():
        return
    backup = upgrade(path)
    log.warning("tracking: upgraded %s to this MLflow's schema; the old store is kept as %s", path, backup)
