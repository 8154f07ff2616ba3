"""The learning-rate range test (``stage=lr_find``): its curve and suggestion are recorded, and the
suggestion is an lr at which the configuration trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.training.job import JobFailed, train
from tests.conftest import compose_cfg, run_cli
from tests.test_search import studies

SHORT = ["trainer.max_epochs=3", "checkpoint=false", "early_stopping_patience=0", "trainer.progress=none"]


def test_lr_find_records_a_curve_and_a_suggestion_at_which_each_optimizer_trains(workdir: Path):
    proc = run_cli(["-m", "stage=lr_find", "optimizer=sgd,adam"], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweeplab.kind") == "run"]
    suggested = {}
    for run in runs:
        optimizer = run.data.params["optimizer"]
        curve = client.get_metric_history(run.info.run_id, "lr_find_loss")
        lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr_find_lr")]
        assert len(curve) >= 30 and lrs == sorted(lrs) and lrs[0] < 1e-5, optimizer
        assert [a.path for a in client.list_artifacts(run.info.run_id) if a.path == "lr_find.png"], optimizer
        suggested[optimizer] = run.data.metrics["best_suggested_lr"]
        assert lrs[0] < suggested[optimizer] < lrs[-1]
    assert set(suggested) == {"sgd", "adam"}
    for optimizer, lr in suggested.items():
        at, above = accuracy(optimizer, lr), accuracy(optimizer, 100 * lr)
        assert at > 0.8 and at > above, (optimizer, lr, at, above)  # same seed: the lr alone differs


def accuracy(optimizer: str, lr: float) -> float:
    """Validation accuracy after a short run (0 if it diverged)."""
    try:
        return train(compose_cfg([f"optimizer={optimizer}", f"lr={lr}", *SHORT])).value
    except JobFailed as failed:
        assert "NonFiniteLoss" in str(failed), failed  # diverged; any other failure is the test's
        return 0.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr_find.max_lr=1e-7", "need 0 < min_lr < max_lr"),
        ("lr_find.steps=5", "lr_find.steps=5 must be a whole number >= 20"),
    ],
)
def test_a_bad_range_is_one_line(workdir: Path, override: str, message: str):
    proc = run_cli(["stage=lr_find", override], cwd=workdir)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.timeout(540)  # two run_cli 240, + 60
def test_lr_auto_searches_a_decade_either_side_of_each_optimizers_suggestion(workdir: Path):
    args = [
        "-m",
        "optimizer=adam,sgd",
        "lr=auto",
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/pruner=none",
        "trainer.max_epochs=2",
        "checkpoint=false",
    ]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("the range test suggests lr") + proc.stderr.count("the range test suggests") == 2
    (study,) = studies(workdir)
    found = json.loads(study.user_attrs["sweeplab.lr_auto"])
    assert set(found) == {"adam", "sgd"} and found["sgd"] > found["adam"]  # SGD takes the larger steps
    for trial in study.trials:
        suggestion = found[trial.params["optimizer"]]
        assert suggestion / 10 <= trial.params["lr"] <= suggestion * 10, trial.params
    again = run_cli([*args[:3], "hydra.sweeper.n_trials=5", *args[4:]], cwd=workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the range test suggests" not in again.stdout + again.stderr  # the study kept its ranges
    (study,) = studies(workdir)
    assert len(study.trials) == 5


def test_lr_auto_that_finds_no_lr_stops_the_search_with_one_line_and_exit_code_1(workdir: Path):
    """A range test whose loss diverges at once is a failure training found, not bad input (exit code 2);
    the study keeps no suggestion for it, so that its next run tests again."""
    args = ["-m", "optimizer=sgd", "lr=auto", "lr_find.min_lr=1e4", "lr_find.max_lr=1e6", "tracking=off"]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "error: lr=auto: the range test found no lr for sgd (its loss diverged at once): lower "
        "lr_find.min_lr, or give lr a range"
    ]
    (study,) = studies(workdir)
    assert json.loads(study.user_attrs["sweeplab.lr_auto"]) == {} and not study.trials
