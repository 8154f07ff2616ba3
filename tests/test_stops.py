"""A search stops starting trials once its target is reached or its epoch budget is spent, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.test_search import studies

SEARCH = [
    "-m",
    "lr=tag(log, interval(1e-3, 1e-2))",
    "hydra/sweeper/sampler=random",
    "hydra/sweeper/pruner=none",
    "hydra.sweeper.n_trials=8",
    "early_stopping_patience=0",
    "checkpoint=false",
]


def parent_tags(workdir: Path) -> dict[str, str]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    (parent,) = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweeplab.kind") == "sweep"
    ]
    return parent.data.tags


def test_a_target_reached_stops_the_search(workdir: Path):
    # Adam on digits passes val_acc 0.5 within 3 epochs at any lr of this range: the first trial reaches it.
    proc = run_cli([*SEARCH, "trainer.max_epochs=3", "hydra.sweeper.target=0.5"], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.trials) == 1 and complete[0].value >= 0.5  # nothing started after it
    why = study.user_attrs["sweeplab.stop_reason"]
    assert why.startswith("target val_acc >= 0.5 reached")
    assert "search: stopped: target val_acc >= 0.5 reached" in proc.stdout + proc.stderr
    assert parent_tags(workdir)["sweeplab.stop_reason"] == why


@pytest.mark.timeout(540)  # two run_cli 240, + 60
def test_an_epoch_budget_stops_the_search_and_a_rerun_starts_nothing(workdir: Path):
    args = [*SEARCH, "trainer.max_epochs=4", "hydra.sweeper.max_epochs_total=10"]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    assert [t.user_attrs["sweeplab.epochs"] for t in study.trials] == [4, 4, 4]  # 8, then 12 >= 10
    assert study.user_attrs["sweeplab.stop_reason"] == "max_epochs_total=10 reached (12 epochs trained)"
    assert parent_tags(workdir)["sweeplab.stop_reason"] == study.user_attrs["sweeplab.stop_reason"]
    again = run_cli(args, cwd=workdir)  # the budget is the study's: the same command resumes and stops
    assert again.returncode == 0, again.stderr[-3000:]
    (study,) = studies(workdir)
    assert len(study.trials) == 3


def test_a_bad_budget_is_one_line(workdir: Path):
    proc = run_cli([*SEARCH, "hydra.sweeper.max_epochs_total=0"], cwd=workdir)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: hydra.sweeper.max_epochs_total=0 must be >= 1 (or null for none)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_a_search_whose_configuration_fails_stops_after_one_trial_with_exit_2(workdir: Path):
    """``trainer=gpu`` without a GPU fails every trial alike: one trial, one line, exit code 2."""
    proc = run_cli(
        ["-m", "trainer=gpu", "lr=tag(log, interval(1e-4, 1e-2))", "hydra.sweeper.n_trials=3"], workdir
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: trial 0 failed on the configuration, not on its sampled values: trainer: "
        "No supported gpu backend found!"
    ]
    (study,) = studies(workdir)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.user_attrs["sweeplab.stop_reason"] == errors[0].removeprefix("error: ")
    assert parent_tags(workdir)["sweeplab.stop_reason"] == study.user_attrs["sweeplab.stop_reason"]


def test_a_search_whose_every_trial_diverges_stops_at_the_default_budget(workdir: Path):
    args = ["-m", "optimizer=sgd", "lr=interval(50.0, 100.0)", "hydra.sweeper.n_trials=20"]
    proc = run_cli([*args, "hydra/sweeper/pruner=none", "trainer.max_epochs=1", "checkpoint=false"], workdir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    why = "the search gave up after 5 failed trials in a row (max_failures_in_a_row=5)"
    assert proc.stderr.strip().splitlines()[-1] == f"error: {why}"
    (study,) = studies(workdir)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 5
    assert study.user_attrs["sweeplab.stop_reason"] == why
    assert parent_tags(workdir)["sweeplab.stop_reason"] == why
    (board,) = workdir.glob("mlruns/multirun/*/*/leaderboard.md")
    assert board.read_text().endswith(f"stopped: {why}\n")
