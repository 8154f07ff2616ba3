"""MLflow records, read back with the MLflow client from real stores: SQLite in a temporary folder, or a
real ``mlflow server`` on loopback."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, free_port, mlflow_server, run_cli, start_cli

GRID = ["-m", "loss=cross_entropy,mse", "optimizer=adam,sgd", "lr=1e-3,1e-2", "trainer.max_epochs=3"]
ENV_TAGS = (
    "sweeplab.host",
    "sweeplab.python",
    "sweeplab.torch",
    "sweeplab.pytorch-lightning",
    "mlflow.source.git.commit",
    "sweeplab.git_dirty",
)


def store(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def all_runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name("sweeplab")
    return client.search_runs([exp.experiment_id], max_results=1000)


def split(runs: list) -> tuple[list, list]:
    parents = [r for r in runs if r.data.tags.get("sweeplab.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("sweeplab.kind") == "run"]
    return parents, children


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


@pytest.mark.timeout(540)  # run_cli 240 + the rerun's 240, + 60
def test_grid_sweep_records_one_parent_with_eight_complete_children(workdir: Path):
    proc = run_cli(GRID, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    client = store(workdir)
    parents, children = split(all_runs(client))
    assert len(parents) == 1
    parent = parents[0]
    assert len(children) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    combos = {(c.data.params["loss"], c.data.params["optimizer"], c.data.params["lr"]) for c in children}
    assert len(combos) == 8

    for child in children:
        params, tags, metrics = child.data.params, child.data.tags, child.data.metrics
        assert child.info.status == "FINISHED" and tags["sweeplab.state"] == "FINISHED"
        for key in (
            "lr",
            "weight_decay",
            "loss._target_",
            "model.hidden",
            "data.batch_size",
            "trainer.max_epochs",
            "optimizer._target_",
            "seed",
        ):
            assert key in params, key
        if params["optimizer"] == "adam":
            assert params["optimizer.beta1"] == "0.9" and params["optimizer.beta2"] == "0.999"
        for name in ("train_loss", "val_loss", "val_acc", "val_f1", "lr", "epoch_time", "samples_per_sec"):
            history = client.get_metric_history(child.info.run_id, name)
            assert [m.step for m in history] == [1, 2, 3], name
        assert metrics["best_val_acc"] == pytest.approx(
            max(m.value for m in client.get_metric_history(child.info.run_id, "val_acc"))
        )
        assert "final_val_acc" in metrics and "test_acc" in metrics
        assert tags["sweeplab.sweep_id"] == parent.info.run_id
        assert tags["sweeplab.job"] in {str(i) for i in range(8)}
        for key in ENV_TAGS:
            assert tags.get(key), key
        command = tags["sweeplab.command"]
        assert command.startswith("python") and f"loss={params['loss']}" in command
        assert artifacts(client, child.info.run_id) >= {"config.yaml", "overrides.txt", "checkpoints"}
        assert artifacts(client, child.info.run_id, "checkpoints") == {"checkpoints/best.ckpt"}

    assert parent.info.status == "FINISHED"
    assert artifacts(client, parent.info.run_id) >= {
        "leaderboard.csv",
        "leaderboard.md",
        "heatmap.png",
        "best_config.txt",
    }
    best = max(children, key=lambda c: c.data.metrics["best_val_acc"])
    assert parent.data.metrics["runs_total"] == 8 and parent.data.metrics["runs_finished"] == 8
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best.data.metrics["best_val_acc"])
    assert parent.data.tags["sweeplab.best_run_id"] == best.info.run_id

    # The recorded command re-runs that configuration and gets the same result.
    words = shlex.split(best.data.tags["sweeplab.command"])
    rerun = subprocess.run(
        [sys.executable, *words[1:], "tracking=off"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"val_acc (max) = {best.data.metrics['best_val_acc']:.4f}" in rerun.stdout


def test_failed_job_is_failed_with_its_reason_and_the_sweep_goes_on(workdir: Path):
    proc = run_cli(
        ["-m", "optimizer=sgd", "lr=10,1e-2", "trainer.max_epochs=2", "early_stopping_patience=0"],
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    client = store(workdir)
    parents, children = split(all_runs(client))
    by_lr = {c.data.params["lr"]: c for c in children}
    failed, fine = by_lr["10"], by_lr["0.01"]
    assert failed.info.status == "FAILED" and failed.data.tags["sweeplab.state"] == "FAILED"
    assert "non-finite loss" in failed.data.tags["sweeplab.reason"]
    assert fine.info.status == "FINISHED"
    assert parents[0].data.metrics["runs_failed"] == 1 and parents[0].data.metrics["runs_finished"] == 1


def _start_long_sweep(workdir: Path) -> subprocess.Popen:
    args = [
        "-m",
        "optimizer=adam,sgd",
        "trainer.max_epochs=1000",
        "early_stopping_patience=0",
        "data=synthetic",
        "data.n_samples=20000",
        "trainer.steps_per_batch=1",
    ]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return start_cli(args, workdir, start_new_session=True, **quiet)


def _wait_for_running_child(workdir: Path, timeout: float = 120) -> MlflowClient:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(workdir.glob("mlruns/multirun/*/*/multirun.yaml")):  # written once the store is ready
            client = store(workdir)
            if client.get_experiment_by_name("sweeplab"):
                _, children = split(all_runs(client))
                if any(
                    c.info.status == "RUNNING" and client.get_metric_history(c.info.run_id, "train_loss")
                    for c in children
                ):
                    return client
        time.sleep(0.5)
    raise AssertionError("no child run started training in time")


def _running(client: MlflowClient) -> list:
    return [r for r in all_runs(client) if r.info.status == "RUNNING"]


def test_killed_training_process_leaves_no_run_running(workdir: Path):
    """SIGKILL to the training process: its tracking process closes the runs as KILLED."""
    proc = _start_long_sweep(workdir)
    try:
        client = _wait_for_running_child(workdir)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _running(client) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert _running(client) == []
    killed = [r for r in all_runs(client) if r.info.status == "KILLED"]
    assert {r.data.tags.get("sweeplab.kind") for r in killed} == {"sweep", "run"}


@pytest.mark.timeout(330)  # 120 + 30 + 120, + 60
def test_sweep_killed_whole_is_closed_by_the_next_command(workdir: Path):
    """SIGKILL to the whole process group: nothing closes the runs until the next sweeplab command."""
    proc = _start_long_sweep(workdir)
    client = _wait_for_running_child(workdir)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1)
    assert len(_running(client)) == 2  # the parent and the child that was training
    nxt = subprocess.run(
        [sys.executable, "-m", "sweeps.compare"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert nxt.returncode == 0, nxt.stderr
    assert _running(client) == []
    killed = [r for r in all_runs(client) if r.info.status == "KILLED"]
    assert len(killed) == 2
    assert all("process ended" in r.data.tags["sweeplab.reason"] for r in killed)


def test_canary_secrets_appear_nowhere(workdir: Path, tmp_path_factory: pytest.TempPathFactory):
    server_dir = tmp_path_factory.mktemp("server")
    uri_secret, value_secret = "CanaryUri7731", "CanaryValue5519"
    with mlflow_server(server_dir) as url:
        host = url.removeprefix("http://")
        proc = run_cli(
            [
                "-m",
                "optimizer=adam,sgd",
                "trainer.max_epochs=2",
                "tracking=server",
                f"tracking.uri=http://bob:{uri_secret}@{host}",
                f"+notes.db_password={value_secret}",
            ],
            cwd=workdir,
        )
        assert proc.returncode == 0, proc.stderr
        client = MlflowClient(url)
        _, children = split(all_runs(client))
        assert len(children) == 2
        assert children[0].data.params["notes.db_password"] == "***"
        assert children[0].data.params["tracking.uri"] == f"http://bob:***@{host}"
    console = proc.stdout + proc.stderr
    for secret in (uri_secret, value_secret):
        assert secret not in console
        for folder in (workdir, server_dir):
            leaks = [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
            assert leaks == [], f"{secret} found in {leaks}"


@pytest.mark.parametrize("mode", [[], ["-m", "optimizer=adam,sgd"]], ids=["run", "sweep"])
def test_unreachable_tracking_server_fails_fast_and_creates_nothing(workdir: Path, mode: list[str]):
    start = time.monotonic()
    proc = run_cli([*mode, "tracking=server", f"tracking.uri=http://127.0.0.1:{free_port()}"], cwd=workdir)
    assert time.monotonic() - start < 60
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: tracking.uri=") and "cannot reach" in lines[0]
    assert "epoch" not in proc.stdout
    assert not list(workdir.glob("mlruns/**/*.db")) and not list(workdir.glob("mlruns/**/checkpoints"))
