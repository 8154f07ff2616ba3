"""``objective.reduce``: a run is scored by its best epoch or by its last one, from the per-epoch history,
with or without checkpoints; MLflow keeps both, Optuna gets the chosen one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.training.callbacks import ObjectiveHistory
from tests.conftest import run_cli
from tests.test_search import studies

# Adam at a high learning rate on a tenth of the digits' labels overfits at once: the validation loss is
# lowest after epoch 1 and rises every epoch after it (the test checks that it peaked early).
OVERFITS = ["objective.metric=val_loss", "lr=0.05", "data.label_fraction=0.1", "trainer.max_epochs=4"]
# Both reductions as the two points of a grid search (a search preset of the test's own, by --config-dir).
REDUCE_GRID = """# @package _global_
hydra:
  sweeper:
    n_trials: 2
    params:
      objective.reduce: choice(best, last)
"""


@pytest.mark.timeout(300)  # run_cli 240, + 60
def test_reduce_best_or_last_scores_a_run_without_checkpoints(workdir: Path):
    (workdir / "extra" / "search").mkdir(parents=True)
    (workdir / "extra" / "search" / "reduce.yaml").write_text(REDUCE_GRID)
    args = ["-m", "--config-dir", "extra", "search=reduce", "hydra/sweeper/sampler=grid"]
    args += ["hydra/sweeper/pruner=none", "early_stopping_patience=0", "checkpoint=false", *OVERFITS]
    proc = run_cli(args, cwd=workdir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    trials = {t.params["objective.reduce"]: t for t in study.get_trials()}
    assert set(trials) == {"best", "last"}

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    for reduce, trial in trials.items():
        (run,) = client.search_runs(
            [client.get_experiment_by_name("sweeplab").experiment_id],
            filter_string=f"tags.`sweeplab.trial` = '{trial.number}'",
        )
        assert run.data.params["checkpoint"] == "False"
        history = [
            m.value
            for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
        ]
        assert len(history) == 4 and history.index(min(history)) < 3, (
            history
        )  # the peak is not the last epoch
        assert run.data.metrics["best_val_loss"] == pytest.approx(min(history))
        assert run.data.metrics["final_val_loss"] == pytest.approx(history[-1])
        assert trial.value == pytest.approx(min(history) if reduce == "best" else history[-1])


def test_history_gives_the_best_finite_epoch_by_mode_and_the_last_one():
    history = ObjectiveHistory("val_loss")
    assert math.isnan(history.best("min")) and math.isnan(history.last())  # no validation yet
    history.values = [0.9, 0.5, math.nan, 0.7]
    assert history.best("min") == 0.5 and history.best("max") == 0.9 and history.last() == 0.7
    history.values.append(math.nan)
    assert math.isnan(history.last())  # a non-finite last epoch stays so: the search counts it failed
    assert history.best("max") == 0.9
