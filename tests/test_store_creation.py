"""The SQLite MLflow store is created and upgraded whole or not at all: a command SIGKILLed while MLflow
migrates a new store leaves nothing that stops the same command, and an older store is upgraded in a copy,
the old one kept."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from mlflow.tracking import MlflowClient

from sweeps.tracking import sqlite_file
from tests.conftest import cli_env

# What the tracking process of a command does first: open the store (creating it) and record a run.
OPEN_AND_RECORD = """
import sys
from sweeps.tracking.store import Store
for folder in sys.argv[1:]:
    store = Store()
    store.open(f"sqlite:///{folder}/mlruns/mlflow.db", "sweeplab", f"{folder}/mlruns", None)
    store.start_run("run0", "probe", {})
    store.end_run("run0", "FINISHED")
"""
MOMENTS = [0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5]  # seconds after the first database file appeared


def opening(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", OPEN_AND_RECORD, str(folder)], env=cli_env(), stderr=subprocess.DEVNULL
    )


def kill_when_created(proc: subprocess.Popen, folder: Path, delay: float) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after a database file (the store, or its temporary file) appears."""
    while proc.poll() is None:
        if any(not p.name.endswith(".lock") for p in folder.glob("mlruns/*mlflow.db*")):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_command_killed_while_the_store_is_created_leaves_one_the_next_command_uses(tmp_path: Path):
    folders = [tmp_path / f"kill{i}" for i in range(len(MOMENTS))]
    procs = [opening(folder) for folder in folders]
    killers = [
        threading.Thread(target=kill_when_created, args=(proc, folder, delay))
        for proc, folder, delay in zip(procs, folders, MOMENTS, strict=True)
    ]
    for killer in killers:
        killer.start()
    for killer, proc in zip(killers, procs, strict=True):
        killer.join(timeout=240)
        proc.wait(timeout=60)
    # The same command, once in each folder: it opens the store and records its run.
    again = subprocess.run(
        [sys.executable, "-c", OPEN_AND_RECORD, *map(str, folders)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    for folder in folders:
        client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
        exp = client.get_experiment_by_name("sweeplab")
        runs = client.search_runs([exp.experiment_id])
        finished = [r.info.status for r in runs if r.info.status == "FINISHED"]
        assert 1 <= len(finished) <= 2, folder  # a late kill: the first run was recorded
        assert not list(folder.glob("mlruns/.mlflow.db.*")), folder  # no temporary file left


@pytest.mark.slow
def test_an_older_store_is_upgraded_in_a_copy_and_the_old_one_kept(tmp_path: Path, caplog):
    path = tmp_path / "mlflow.db"
    sqlite_file.create(path, MlflowClient)
    import mlflow.store

    migrations = Path(mlflow.store.__file__).parent / "db_migrations"
    alembic = Config()
    alembic.set_main_option("script_location", str(migrations))
    alembic.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.downgrade(alembic, "-1")  # the store as the previous MLflow release left it
    old = sqlite_file.revision(path)
    assert old is not None and old != sqlite_file.head_revision()
    sqlite_file.ready(path, MlflowClient)
    assert sqlite_file.revision(path) == sqlite_file.head_revision()
    (backup,) = tmp_path.glob("mlflow.db.*.bak")
    assert sqlite_file.revision(backup) == old
    assert f"the old store is kept as {backup}" in caplog.text
    assert MlflowClient(f"sqlite:///{path}").search_experiments()  # MLflow opens it
