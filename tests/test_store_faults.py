"""Faults of the stores under a sweep: an unreadable SQLite store is refused with one line, left as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

GRID = ["-m", "lr=1e-3,1e-2", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "checkpoint=false"]
SEARCH = [
    "-m",
    "lr=interval(1e-3,1e-2)",
    "hydra.sweeper.n_trials=1",
    "trainer.max_epochs=1",
    "checkpoint=false",
]


def garbage(path: Path, size: int = 8192) -> bytes:
    """``size`` bytes that are no SQLite database, written to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes((i * 7919 + 13) % 251 for i in range(size))
    path.write_bytes(data)
    return data


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def test_an_unreadable_mlflow_db_is_refused_and_left_as_it_is(workdir: Path):
    db = workdir / "mlruns" / "mlflow.db"
    data = garbage(db)
    proc = run_cli(GRID, cwd=workdir)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("error: tracking.uri=sqlite:///mlruns/mlflow.db") and "not a database" in line
    assert db.read_bytes() == data  # never overwritten or created anew
    assert not (workdir / "mlruns" / "artifacts").exists()


def test_a_mlflow_db_with_damaged_pages_is_refused_and_left_as_it_is(workdir: Path):
    """A real store whose pages after the header a crash overwrote (the file still says it is SQLite)."""
    db = workdir / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    client = MlflowClient(f"sqlite:///{db}")  # MLflow's whole schema, and a run in it
    run = client.create_run(client.create_experiment("sweeplab"))
    client.log_metric(run.info.run_id, "val_acc", 0.5)
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[3 * page : 40 * page] = b"\xff" * (37 * page)
    db.write_bytes(bytes(data))
    proc = run_cli(GRID, cwd=workdir)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("error: tracking.uri=sqlite:///mlruns/mlflow.db") and "malformed" in line
    assert db.read_bytes() == bytes(data)


def test_an_unreadable_sqlite_study_is_refused_and_left_as_it_is(workdir: Path):
    db = workdir / "study.db"
    data = garbage(db)
    proc = run_cli([*SEARCH, "hydra.sweeper.storage=sqlite:///study.db", "tracking=off"], cwd=workdir)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert (
        line.startswith("error: hydra.sweeper.storage=sqlite:///study.db cannot be opened")
        and "database" in line
    )
    assert db.read_bytes() == data
