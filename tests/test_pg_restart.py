"""PostgreSQL restarted, or gone, in the middle of a two-worker study: a real server on loopback (started by
``sweeps.launch.servers``), stopped with ``pg_ctl -m fast`` while trials run, and real worker processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.launch import servers
from sweeps.search import locks
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # real servers and training: the slow tier
N_TRIALS = 6


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory):
    """Our own server (the tests stop it). Skipped where PostgreSQL cannot start, except under CI (env
    ``CI`` set), where .ci/run installs it: there it fails."""
    root = tmp_path_factory.mktemp("pg")
    try:
        state = servers.start_postgres(root)
    except SystemExit as err:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL did not start under CI: {err}", pytrace=False)
        pytest.skip(f"PostgreSQL did not start: {err}")
    try:
        yield root, state
    finally:
        servers.stop(root)


def pg_stop(root: Path) -> None:
    data = root / "pg" / "data"
    command = [servers.pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
    subprocess.run(servers._as_server_user(command), check=True, capture_output=True, cwd="/")


def worker(folder: Path, url: str, name: str, *extra: str) -> subprocess.Popen:
    folder.mkdir(exist_ok=True)
    args = [
        "-m",
        "lr=tag(log, interval(1e-3, 1e-1))",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage={url}",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=40",  # longer than the restart: no live trial is failed as stale
        "trainer.max_epochs=40",  # trials of about 1 s: the study is still running when the database stops
        "trainer.num_threads=1",
        "checkpoint=false",
        "early_stopping_patience=0",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",  # absolute: each worker its own store
        *extra,
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps.run", *args],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"},
        stdout=(folder / "out.txt").open("a"),
        stderr=(folder / "err.txt").open("a"),
        start_new_session=True,
    )


def study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(locks.driver_url(url)))


def wait_for_running(url: str, name: str, timeout: float = 240) -> None:
    """Until a trial is RUNNING and has reported an epoch (mid-training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            trials = study(url, name).get_trials(deepcopy=False)
        except KeyError:
            continue
        if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
            return
    raise AssertionError("no trial was ever seen running")


def check_study(url: str, name: str) -> None:
    """Exactly ``N_TRIALS`` finished, none running, none run twice."""
    trials = study(url, name).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N_TRIALS, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.params["lr"] for t in finished}) == N_TRIALS
    assert len({t.number for t in finished}) == N_TRIALS


def open_runs(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "mlflow.db") as db:
        return db.execute("SELECT run_uuid, status FROM runs WHERE status = 'RUNNING'").fetchall()


@pytest.mark.timeout(600)
def test_postgres_restarted_while_trials_run_loses_and_repeats_nothing(pg, tmp_path: Path):
    root, state = pg
    url = servers.create_database(state, "restart")
    workers = [worker(tmp_path / f"w{i}", url, "restart") for i in range(2)]
    try:
        wait_for_running(url, "restart")
        pg_stop(root)
        time.sleep(4)
        assert servers.start_postgres(root).pg_port == state.pg_port
        codes = [w.wait(timeout=400) for w in workers]
    finally:
        for w in workers:
            w.kill()
    errors = [(tmp_path / f"w{i}" / "err.txt").read_text() for i in range(2)]
    assert codes == [0, 0], [e[-3000:] for e in errors]
    check_study(url, "restart")
    assert not [t for t in study(url, "restart").get_trials() if t.state == TrialState.FAIL]
    for i in range(2):
        assert open_runs(tmp_path / f"w{i}") == []
    logs = [(tmp_path / f"w{i}" / "out.txt").read_text() for i in range(2)]
    assert all("the database did not answer" in log for log in logs)  # both met the restart


@pytest.mark.timeout(600)
def test_postgres_gone_stops_each_worker_with_one_line_and_the_rerun_finishes(pg, tmp_path: Path):
    root, state = pg
    url = servers.create_database(state, "gone")
    retry = "hydra.sweeper.storage_retry_seconds=6"
    workers = [worker(tmp_path / f"w{i}", url, "gone", retry) for i in range(2)]
    try:
        wait_for_running(url, "gone")
        pg_stop(root)
        codes = [w.wait(timeout=300) for w in workers]
    finally:
        for w in workers:
            w.kill()
        servers.start_postgres(root)
    for i, code in enumerate(codes):
        err = (tmp_path / f"w{i}" / "err.txt").read_text()
        assert code == 1, err[-3000:]
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err[-3000:]
        assert f"127.0.0.1:{state.pg_port}/gone" in lines[0] and "storage_retry_seconds" in lines[0]
        assert state.password not in err
        assert "Traceback" not in err, err[-3000:]
    # The same commands again (each worker's parent run, left open for the others, is in its own store).
    reruns = [worker(tmp_path / f"w{i}", url, "gone", retry) for i in range(2)]
    codes = [rerun.wait(timeout=400) for rerun in reruns]
    assert codes == [0, 0], [(tmp_path / f"w{i}" / "err.txt").read_text()[-3000:] for i in range(2)]
    check_study(url, "gone")
    for i in range(2):
        assert open_runs(tmp_path / f"w{i}") == []


def test_a_negative_storage_retry_time_fails_with_one_line(workdir: Path):
    setting = "hydra.sweeper.storage_retry_seconds=-1"
    args = ["-m", "lr=interval(0.001,0.1)", f"hydra.sweeper.storage=sqlite:///{workdir}/s.db", setting]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "storage_retry_seconds=-1.0 must be >= 0" in lines[0], proc.stderr
