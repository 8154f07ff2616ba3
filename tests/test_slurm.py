"""Trials as jobs of Hydra's submitit launcher (its local executor: real job processes, as on Slurm), and
the scheduler's stop signals: a real SIGTERM / SIGUSR1 to a training process, then the resumed run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tests.conftest import run_cli, start_cli


def runs(workdir: Path) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeplab")
    return client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.mark.timeout(660)  # run_cli 600, + 60
def test_submitit_local_runs_a_4_trial_search_as_jobs(workdir: Path):
    args = [
        "-m",
        "lr=tag(log, interval(1e-3, 1e-1))",
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=4",
        "trainer.max_epochs=2",
        "trainer.num_threads=1",
        "checkpoint=false",
    ]
    # Slurm's path stays a real process, as users run it: submitit pickles the task for its job processes.
    proc = run_cli(args, cwd=workdir, timeout=600, subprocess=True)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "best of study" in proc.stdout
    storage = JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(len(t.intermediate_values) == 2 for t in trials)  # each job reported to its own trial
    sweep_dir = next(workdir.glob("mlruns/multirun/*/*"))
    assert list(sweep_dir.glob(".submitit/*/*_log.out"))  # they ran as submitit jobs
    everything = runs(workdir)
    (parent,) = [r for r in everything if r.data.tags.get("sweeplab.kind") == "sweep"]
    children = [r for r in everything if r.data.tags.get("sweeplab.kind") == "run"]
    assert sorted(r.data.tags["sweeplab.trial"] for r in children) == ["0", "1", "2", "3"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    assert all(r.data.tags["sweeplab.host"] for r in children)
    by_trial = {int(r.data.tags["sweeplab.trial"]): r for r in children}
    for trial in trials:
        assert by_trial[trial.number].data.metrics["best_val_acc"] == pytest.approx(trial.value)
    assert len([line for line in (sweep_dir / "leaderboard.csv").read_text().splitlines() if line]) == 5


def start_run(workdir: Path, run_dir: Path) -> subprocess.Popen:
    args = [
        "trainer.max_epochs=40",
        "early_stopping_patience=0",
        "trainer.num_threads=1",
        f"hydra.run.dir={run_dir}",
    ]
    return start_cli(args, workdir)


def wait_for_epoch(proc: subprocess.Popen, epoch: int, timeout: float = 180) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if f"epoch {epoch}/" in line:
            return seen
    raise AssertionError(f"no epoch {epoch} line:\n{seen[-3000:]}")


@pytest.mark.timeout(660)  # 180 + 120 + 300, + 60
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_checkpoints_kills_the_run_and_the_rerun_resumes(workdir: Path, signum: int):
    run_dir = workdir / "trial"
    proc = start_run(workdir, run_dir)
    wait_for_epoch(proc, 3)
    proc.send_signal(signum)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, rest[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in rest
    assert (run_dir / "last.ckpt").exists()
    (killed,) = runs(workdir)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["sweeplab.state"] == "KILLED"
    assert signal.Signals(signum).name in killed.data.tags["sweeplab.reason"]
    if signum != signal.SIGTERM:
        return
    # The requeued job: the same trial folder, so it resumes from last.ckpt and trains only what is left.
    again = start_run(workdir, run_dir)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    assert "resuming from" in out
    trained = [line for line in out.splitlines() if " epoch " in line and "/40" in line]
    assert trained and len(trained) < 40 and "epoch 40/40" in trained[-1]
    finished = [r for r in runs(workdir) if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.metrics["epochs"] == 40


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.timeout(600)  # 240 + 300, + 60
def test_submitit_requeue_signal_checkpoints_and_the_requeued_job_resumes(workdir: Path):
    args = [
        "-m",
        "lr=tag(log, interval(1e-3, 1e-1))",
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_trials=1",
        "trainer.max_epochs=200",
        "early_stopping_patience=0",
        "trainer.num_threads=1",
    ]
    sweep = start_cli(args, workdir)
    deadline = time.monotonic() + 240
    job_log = None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        job_log = next(workdir.glob("mlruns/multirun/*/*/.submitit/*/*_0_log.out"), None)
        if job_log and "epoch 3/" in job_log.read_text():
            break
    assert job_log is not None, "the job never started"
    # What Slurm (or submitit's local controller at the time limit) does: the requeue signal to the task.
    (task,) = children_of(int(job_log.parent.name))
    os.kill(task, signal.SIGUSR2)
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out[-3000:]
    text = "\n".join(p.read_text() for p in job_log.parent.glob("*_log.*"))
    assert "stopped by SIGUSR2" in text and "Requeued job" in text and "resuming from" in text
    assert (job_log.parents[2] / "0" / "last.ckpt").exists()
    everything = runs(workdir)
    trial_runs = sorted(
        (r for r in everything if r.data.tags.get("sweeplab.trial") == "0"), key=lambda r: r.info.start_time
    )
    assert [r.info.status for r in trial_runs] == ["KILLED", "FINISHED"]
    assert "SIGUSR2" in trial_runs[0].data.tags["sweeplab.reason"]
    assert trial_runs[1].data.metrics["epochs"] == 200
    (parent,) = [r for r in everything if r.data.tags.get("sweeplab.kind") == "sweep"]
    assert parent.info.status == "FINISHED"
