"""Faults of the stores under a sweep: an unreadable SQLite store is refused with one line, left as it is; a
full disk stops a sweep with one line, and the same command resumes it once there is space."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import free_port, run_cli, start_cli
from tests.test_search import children, studies

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


# Trials long enough (a few seconds) that the second is still training when the disk fills.
FULL = ["-m", "search=lr_betas", "hydra.sweeper.n_trials=3", "trainer.max_epochs=30"]
FULL += ["trainer.limit_train_batches=5", "checkpoint=false", "early_stopping_patience=0"]


@pytest.fixture
def small_mlruns(workdir: Path):
    """``workdir/mlruns`` on a tmpfs of 1600 KiB (MLflow's empty database takes about 1 MiB)."""
    mlruns = workdir / "mlruns"
    mlruns.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mlruns)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mlruns
    finally:
        subprocess.run(["umount", "-l", str(mlruns)], check=False)


def finished_in(journal: Path) -> int:
    """Trials told COMPLETE or PRUNED so far (read from the journal's text while the sweep writes it)."""
    text = journal.read_text(errors="replace") if journal.exists() else ""
    return text.count('"op_code":6') - text.count('"state":4')  # state changes, less those to FAIL


@pytest.mark.timeout(540)  # 240 + run_cli 240, + 60
def test_a_full_disk_stops_the_sweep_and_the_same_command_resumes_after_space_is_freed(small_mlruns: Path):
    workdir = small_mlruns.parent
    proc = start_cli(FULL, workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while finished_in(small_mlruns / "optuna.journal") < 1 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(0.5)  # the second trial is training
    assert os.path.ismount(small_mlruns)
    with (small_mlruns / "filler").open("wb", buffering=0) as filler:
        with pytest.raises(OSError, match="No space left"):
            while True:
                filler.write(bytes(65536))
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == stderr.splitlines()[-1], stderr[-3000:]
    assert "No space left on device (mlruns" in errors[0] and "run the same command" in errors[0]
    # That line alone: no traceback, no "--- Logging error ---", no MLflow database error, no Hydra job line.
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == errors, stderr[-3000:]
    (study,) = studies(workdir)  # Optuna reads it (a torn last record is skipped by its reader)
    before = {t.number: t.params for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert len(before) >= 1
    closed = [r for r in children(workdir) if r.info.status == "FINISHED"]
    assert all(len(r.data.metrics) > 0 for r in closed)

    (small_mlruns / "filler").unlink()
    rerun = run_cli(FULL, cwd=workdir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (study,) = studies(workdir)
    after = {t.number: t.params for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}
    assert len(after) == 3 and {n: p for n, p in after.items() if n in before} == before
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert not [r for r in children(workdir) if r.info.status == "RUNNING"]


# A store with one finished run, made in a process of its own (this one keeps no connection to it).
FINISHED_RUN = """
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient("sqlite:///" + sys.argv[1])
client.set_terminated(client.create_run(client.create_experiment("sweeplab")).info.run_id)
"""

# A second command in the middle of a long write: it holds SQLite's exclusive lock until told to stop.
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
db.execute("UPDATE experiments SET name = name")
print("holding", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@pytest.mark.timeout(510)  # 120 + run_cli 300 + 30, + 60
def test_a_locked_mlflow_db_is_waited_for_then_refused_with_one_line_naming_its_holder(workdir: Path):
    db = workdir / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    subprocess.run([sys.executable, "-c", FINISHED_RUN, str(db)], check=True, timeout=120)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        began = time.monotonic()
        proc = run_cli(GRID, cwd=workdir, timeout=300)
        waited = time.monotonic() - began
    finally:
        holder.communicate("done\n", timeout=30)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("error: tracking.uri=sqlite:///mlruns/mlflow.db") and "database is locked" in line
    assert f"pid {holder.pid} " in line, line  # the lock's holder, as far as /proc can tell
    assert waited < 240
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    client = MlflowClient(f"sqlite:///{db}")
    (experiment,) = client.search_experiments(filter_string="name = 'sweeplab'")
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])] == ["FINISHED"]


def serve(folder: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` over ``folder``'s SQLite store, once it answers."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--workers", "1"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    log = (folder / "server.log").open("a")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return server
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (folder / "server.log").read_text()
            time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=20)


def test_a_tracking_server_away_30_s_mid_sweep_loses_no_history(workdir: Path, tmp_path_factory):
    folder, port = tmp_path_factory.mktemp("server"), free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "lr=1e-3,3e-3,1e-2", "trainer.max_epochs=6", "trainer.limit_train_batches=5"]
    args += ["early_stopping_patience=0", "checkpoint=false", "tracking=server", f"tracking.uri={url}"]
    server = serve(folder, port)
    proc = start_cli(args, workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = MlflowClient(url)
        deadline = time.monotonic() + 240
        while not [r for r in client.search_runs(["0", "1"]) if r.info.status == "FINISHED"]:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(1)
        stop(server)  # the first run is closed; the second trains
        time.sleep(30)
        server = serve(folder, port)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        (experiment,) = client.search_experiments(filter_string="name = 'sweeplab'")
        runs = client.search_runs([experiment.experiment_id])
        trained = [r for r in runs if r.data.tags.get("sweeplab.kind") == "run"]
        assert len(trained) == 3 and all(r.info.status == "FINISHED" for r in runs)
        for run in trained:  # every epoch of every run, none lost while the server was away
            history = client.get_metric_history(run.info.run_id, "val_acc")
            assert sorted(m.step for m in history) == list(range(1, 7)), run.data.params.get("lr")
    finally:
        if proc.poll() is None:
            proc.kill()
        stop(server)
