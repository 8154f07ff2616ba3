"""DDP inside runs and sweeps (``trainer=ddp_cpu``: 2 CPU processes with gloo, the GPU code path), and mixed
precision on the CPU. Each DDP job of a sweep runs as its own process group: one trial, one MLflow run and
one folder per job."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeps.training.job import train
from tests.conftest import compose_cfg, run_cli
from tests.test_search import studies

FAST = ["trainer.max_epochs=2", "early_stopping_patience=0", "trainer.progress=epoch"]
# The DDP tests run the CLI as a real process (``subprocess=True``): their subject is a process group, and
# Lightning's ddp strategy starts its processes by re-running the command's sys.argv.


def runs(workdir: Path) -> tuple[list, list]:
    """(sweep parent runs, training runs) of the store under ``workdir``."""
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    found = client.search_runs([exp.experiment_id], max_results=1000)
    kinds = [r.data.tags.get("sweeplab.kind") for r in found]
    return (
        [r for r, k in zip(found, kinds, strict=True) if k == "sweep"],
        [r for r, k in zip(found, kinds, strict=True) if k == "run"],
    )


def job_folders(workdir: Path) -> list[Path]:
    (sweep_dir,) = [p.parent for p in (workdir / "mlruns" / "multirun").glob("*/*/multirun.yaml")]
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir())


@pytest.mark.timeout(520)  # run_cli 400 + one training in this process, + 60
def test_ddp_grid_one_run_per_job_matching_a_single_process(workdir: Path):
    args = ["-m", "trainer=ddp_cpu", "optimizer=adam,sgd", *FAST]
    proc = run_cli(args, cwd=workdir, timeout=400, subprocess=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in job_folders(workdir)] == ["0", "1"]
    (parent,), children = runs(workdir)
    assert len(children) == 2
    assert {r.data.tags["sweeplab.job"] for r in children} == {"0", "1"}
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["sweeplab.sweep_id"] == parent.info.run_id for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.data.params["trainer.strategy"] == "ddp" for r in children)

    # The same global batch and seed in one process: the same training, up to float summation order.
    adam = next(r for r in children if r.data.params["optimizer"] == "adam")
    single = train(compose_cfg(["optimizer=adam", "trainer.steps_per_batch=1", "checkpoint=false", *FAST]))
    for key in ("val_loss", "train_loss"):
        assert math.isclose(adam.data.metrics[key], single.metrics[key], rel_tol=0.01), key
    assert abs(adam.data.metrics["val_acc"] - single.metrics["val_acc"]) <= 0.02


@pytest.mark.timeout(560)  # run_cli 500, + 60
def test_ddp_optuna_search_three_trials(workdir: Path):
    args = ["-m", "trainer=ddp_cpu", "lr=tag(log, interval(1e-4, 1e-2))", "hydra.sweeper.n_trials=3", *FAST]
    proc = run_cli(args, cwd=workdir, timeout=500, subprocess=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    trials = study.get_trials()
    assert len(trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert [p.name for p in job_folders(workdir)] == ["0", "1", "2"]
    (parent,), children = runs(workdir)
    assert sorted(r.data.tags["sweeplab.trial"] for r in children) == ["0", "1", "2"]
    for trial in trials:
        (run,) = [r for r in children if r.data.tags["sweeplab.trial"] == str(trial.number)]
        assert math.isclose(float(run.data.params["lr"]), trial.params["lr"], rel_tol=1e-6)
        if trial.state == TrialState.COMPLETE:
            assert math.isclose(run.data.metrics["best_val_acc"], trial.value, rel_tol=1e-6)


@pytest.mark.timeout(460)  # run_cli 400, + 60
def test_a_crashed_rank_fails_its_trial_and_the_sweep_goes_on(workdir: Path):
    args = [
        "-m",
        "trainer=ddp_cpu",
        "model._target_=tests.helpers.SelfKillingMLP",
        "+model.die_rank=1,7",  # rank 1 dies in job 0; there is no rank 7, so job 1 trains
        *FAST,
    ]
    proc = run_cli(args, cwd=workdir, timeout=400, subprocess=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    leaderboard = (job_folders(workdir)[0].parent / "leaderboard.csv").read_text()
    assert "FAILED" in leaderboard and "FINISHED" in leaderboard
    _, children = runs(workdir)
    states = {r.data.tags["sweeplab.job"]: r.info.status for r in children}
    assert states["1"] == "FINISHED"
    assert states["0"] in ("KILLED", "FAILED")  # its run exists and was closed, never left RUNNING
    assert all(r.info.status != "RUNNING" for r in children)


@pytest.mark.timeout(360)  # run_cli 300, + 60
def test_bf16_mixed_trains_on_cpu_and_is_recorded(workdir: Path):
    proc = run_cli(["precision=bf16-mixed", "trainer.max_epochs=2"], cwd=workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, (run,) = runs(workdir)
    assert run.data.params["precision"] == "bf16-mixed"
    assert run.data.params["trainer.precision"] == "bf16-mixed"
    assert run.data.metrics["val_acc"] > 0.5


def test_bad_precision_is_one_line(workdir: Path):
    proc = run_cli(["precision=fp8"], cwd=workdir)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: precision=fp8: allowed are 32-true, bf16-mixed, 16-mixed"


@pytest.mark.timeout(460)  # run_cli 400, + 60
def test_pruning_decided_on_rank_0_stops_every_rank(workdir: Path):
    # A pruner that stops every trial after its first epoch (val_acc is always below 1.1).
    args = [
        "-m",
        "trainer=ddp_cpu",
        "lr=interval(1e-3, 1e-2)",
        "hydra.sweeper.n_trials=1",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=1.1",
        "trainer.max_epochs=5",
        "early_stopping_patience=0",
    ]
    proc = run_cli(args, cwd=workdir, timeout=400, subprocess=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    _, (run,) = runs(workdir)
    assert run.data.tags["sweeplab.state"] == "PRUNED"
    assert run.info.status == "FINISHED"
    (job,) = job_folders(workdir)
    rank1 = (job / "train_ddp_process_1.log").read_text()  # Lightning names rank 1's Hydra log so
    assert "pruned after epoch 1" in rank1  # rank 1 stopped at the same epoch, by rank 0's decision
    assert "Error" not in rank1 and "Traceback" not in rank1
