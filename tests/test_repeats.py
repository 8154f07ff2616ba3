"""Repeats through the CLI: configurations trained on several seeds or folds, as MLflow and Optuna see it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from scipy import stats as scipy_stats

from tests.conftest import run_cli, start_cli
from tests.helpers import HoldingMLP
from tests.test_search import studies

pytestmark = pytest.mark.slow
FAST = ["trainer.max_epochs=3", "early_stopping_patience=0", "trainer.progress=none"]


def runs_by_kind(workdir: Path) -> dict[str, list]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    out: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        out.setdefault(run.data.tags["sweeplab.kind"], []).append(run)
    return out


def check_spread(config, members: list, key: str) -> None:
    """The configuration run carries the mean, std and Student's t 95% interval of its members' ``key``."""
    values = [m.data.metrics[key] for m in members]
    low, high = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    got = config.data.metrics
    assert got[key] == pytest.approx(np.mean(values))
    assert got[f"{key}_std"] == pytest.approx(np.std(values, ddof=1))
    assert (got[f"{key}_ci_low"], got[f"{key}_ci_high"]) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.timeout(540)  # two run_cli 240, + 60
def test_grid_with_three_repeats_nests_seed_runs_and_says_adam_beats_sgd(workdir: Path):
    proc = run_cli(["-m", "optimizer=adam,sgd", "repeats=3", *FAST], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_by_kind(workdir)
    (sweep,) = runs["sweep"]
    configs, seeds = runs["configuration"], runs["seed"]
    assert len(configs) == 2 and len(seeds) == 6 and "run" not in runs
    for config in configs:
        assert config.data.tags["mlflow.parentRunId"] == sweep.info.run_id
        mine = [s for s in seeds if s.data.tags["mlflow.parentRunId"] == config.info.run_id]
        assert sorted(s.data.tags["sweeplab.member"] for s in mine) == ["seed=42", "seed=43", "seed=44"]
        assert {s.data.params["optimizer"] for s in mine} == {config.data.params["optimizer"]}
        assert config.data.metrics["n_seeds"] == 3
        for key in ("best_val_acc", "val_loss", "test_acc"):
            check_spread(config, mine, key)
    board = next(workdir.glob("mlruns/multirun/*/*/leaderboard.md")).read_text()
    assert "val_acc (mean ± 95% CI) | n |" in board
    adam = next(line for line in board.splitlines() if "| adam |" in line)
    assert adam.startswith("| 1 |") and " ± " in adam and "| 3 |" in adam
    verdict = "optimizer=adam beats optimizer=sgd by "
    assert verdict in board and verdict in proc.stdout and "3 seeds" in board
    assert sweep.data.tags["sweeplab.verdict"].startswith(verdict)
    shown = run_cli([], cwd=workdir, module="sweeps.compare")  # the CLI leaderboard of the store
    assert shown.returncode == 0 and shown.stdout.count(" (n=3)") == 2 and " ± " in shown.stdout


def test_search_with_repeats_tells_the_mean_and_prunes_every_seed_of_a_trial(workdir: Path):
    args = [
        "-m",
        "lr=tag(log, interval(1e-4, 1e-1))",
        "optimizer=sgd",
        "repeats=3",
        "checkpoint=false",
        "hydra.sweeper.n_trials=2",  # with this sampler seed: one pruned, one complete
        "hydra.sweeper.sampler.seed=1",
        "hydra/sweeper/pruner=none",  # a pruner that surely prunes the small learning rates at epoch 1:
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=0.5",
        *FAST,
    ]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    seeds = runs_by_kind(workdir)["seed"]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    states = {t.state for t in study.get_trials()}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}, states
    for trial in study.get_trials():
        mine = [s for s in seeds if s.data.tags["sweeplab.trial"] == str(trial.number)]
        assert len(mine) == 3
        curves = [[m.value for m in client.get_metric_history(s.info.run_id, "val_acc")] for s in mine]
        for epoch, value in trial.intermediate_values.items():  # the pruner heard the mean of each epoch
            assert value == pytest.approx(np.mean([c[epoch - 1] for c in curves]))
        if trial.state == TrialState.COMPLETE:
            values = [s.data.metrics["best_val_acc"] for s in mine]
            assert trial.value == pytest.approx(np.mean(values))
            assert sorted(trial.user_attrs["sweeplab.samples"].values()) == pytest.approx(sorted(values))
        else:  # every seed stopped at the epoch the mean was pruned at
            assert {s.data.tags["sweeplab.state"] for s in mine} == {"PRUNED"}
            assert {len(c) for c in curves} == {max(trial.intermediate_values)} and len(curves[0]) < 3


def test_cv_five_on_breast_cancer_gives_five_fold_runs_and_a_mean_with_its_interval(workdir: Path):
    proc = run_cli(["cv=5", "data=breast_cancer", *FAST], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val_acc = " in proc.stdout and "(95% CI, 5 runs)" in proc.stdout
    runs = runs_by_kind(workdir)
    (config,) = runs["configuration"]
    folds = runs["fold"]
    assert sorted(f.data.tags["sweeplab.member"] for f in folds) == [f"fold={k}/5" for k in range(1, 6)]
    assert {f.data.tags["mlflow.parentRunId"] for f in folds} == {config.info.run_id}
    check_spread(config, folds, "best_val_acc")


@pytest.mark.timeout(1200)  # seven processes, each paying the start-up of a sweep
def test_benchmark_protocol_killed_midway_resumes_without_repeating_finished_work(workdir: Path):
    """3 optimizers, 4 tuning trials each, 3 seeds: SIGKILLed while the second optimizer tunes, then rerun.
    The first command's sixth training (the second optimizer's trial 1) waits to be killed (``HoldingMLP``):
    a training of one epoch is over before a poll of the study could see it running."""
    args = ["--optimizers", "sgd,momentum,adam", "--trials", "4", "--seeds", "3", "--name", "b"]
    args += ["trainer.max_epochs=1", "checkpoint=false", "trainer.progress=none"]
    args += ["model._target_=tests.helpers.HoldingMLP"]
    held = workdir / "trainings"
    held.mkdir()
    hold = {HoldingMLP.HOLD: f"{held}:6"}
    proc = start_cli(args, workdir, module="sweeps.benchmark", start_new_session=True, env=hold)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            found = {s.study_name: s.get_trials() for s in _studies(workdir)}
            tuned = [t for t in found.get("b-cross_entropy-sgd", []) if t.state in FINISHED]
            # A claimed trial of the second optimizer (not one being asked for: see the report) is training.
            training = [
                t
                for t in found.get("b-cross_entropy-momentum", [])
                if t.state == TrialState.RUNNING and "sweeplab.owner" in t.user_attrs and t.number >= 1
            ]
            if len(tuned) == 4 and training:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the benchmark ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and the search it runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    again = run_cli(args, cwd=workdir, module="sweeps.benchmark", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s.study_name: len(s.get_trials(states=FINISHED)) for s in _studies(workdir)} == {
        f"b-cross_entropy-{o}": 4 for o in ("sgd", "momentum", "adam")
    }
    folder = workdir / "mlruns" / "benchmark" / "b"
    text = (folder / "benchmark.md").read_text()
    rows = [
        line for line in text.splitlines() if line.startswith("| ") and " ± " in line and "rank" not in line
    ]
    assert len(rows) == 3 and all("| 3 |" in row for row in rows)
    assert text.count("\n- optimizer=") == 2 and "## Budget" in text
    runs = runs_by_kind(workdir)
    (bench,) = runs["benchmark"]
    assert bench.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(bench.info.run_id)}
    assert {
        "benchmark.md",
        *(f"lr_sensitivity_cross_entropy-{o}.png" for o in ("sgd", "momentum", "adam")),
    } <= logged
    sweeps = runs["sweep"]
    assert {s.data.tags["mlflow.parentRunId"] for s in sweeps} == {bench.info.run_id}
    tuned_sgd = [s for s in sweeps if s.data.tags["sweeplab.sweep_dir"].endswith("search/cross_entropy-sgd")]
    assert len(tuned_sgd) == 1  # finished before the kill: not run again
    finished = [c for c in runs["configuration"] if c.info.status == "FINISHED"]
    assert len(finished) == 3 and {c.data.params["optimizer"] for c in finished} == {
        "sgd",
        "momentum",
        "adam",
    }


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _studies(workdir: Path) -> list:
    try:
        return studies(workdir) if (workdir / "mlruns" / "optuna.journal").exists() else []
    except Exception:  # noqa: BLE001 - the journal is being written by the benchmark
        return []
