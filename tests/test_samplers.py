"""Every sampler and pruner preset runs a real 3-trial search (tiny trials), and what a finished search leaves
behind: Optuna's pictures on the parent run and ``python -m sweeps.compare``'s table."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.test_search import studies

TINY = [
    "hydra.sweeper.n_trials=3",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.num_threads=1",
    "early_stopping_patience=0",
    "checkpoint=false",
]
SPACE = ["lr=tag(log, interval(1e-3, 1e-1))", "optimizer.beta1=interval(0.8, 0.99)"]
GRID = """# @package _global_
hydra:
  sweeper:
    params:
      lr: choice(0.001, 0.01, 0.1)
"""
# Each sampler once, each pruner at least once (a CLI start costs ~8 s: one search per pair).
PAIRS = [
    ("tpe", "median", "TPESampler", "MedianPruner"),
    ("random", "hyperband", "RandomSampler", "HyperbandPruner"),
    ("gp", "successive_halving", "GPSampler", "SuccessiveHalvingPruner"),
    ("cmaes", "none", "CmaEsSampler", "NopPruner"),
    ("qmc", "median", "QMCSampler", "MedianPruner"),
    ("grid", "none", "GridSampler", "NopPruner"),
]


@pytest.mark.timeout(300)  # run_cli 240, + 60
@pytest.mark.parametrize(("sampler", "pruner", "sampler_class", "pruner_class"), PAIRS)
def test_each_sampler_and_pruner_runs_a_3_trial_search(
    workdir: Path, sampler: str, pruner: str, sampler_class: str, pruner_class: str
):
    if sampler == "grid":  # a grid needs choices: a search preset of the test's own, by --config-dir
        (workdir / "extra" / "search").mkdir(parents=True)
        (workdir / "extra" / "search" / "lr3.yaml").write_text(GRID)
        space = ["--config-dir", "extra", "search=lr3"]
    else:
        space = SPACE
    args = ["-m", *space, f"hydra/sweeper/sampler={sampler}", f"hydra/sweeper/pruner={pruner}", *TINY]
    proc = run_cli([*args, "tracking=off"], cwd=workdir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"({sampler_class}, {pruner_class})" in proc.stdout + proc.stderr  # the preset asked for is used
    (study,) = studies(workdir)
    trials = study.get_trials()
    assert len(trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), trials
    if sampler == "grid":  # every point once, then the search ends (Optuna's grid would stop the study)
        assert sorted(t.params["lr"] for t in trials) == [0.001, 0.01, 0.1]
    else:
        assert len({t.params["lr"] for t in trials}) == 3


@pytest.mark.timeout(420)  # run_cli 240 + compare's 120, + 60
def test_a_finished_search_draws_optuna_pictures_and_compare_prints_its_table(workdir: Path):
    args = ["-m", *SPACE, "hydra/sweeper/pruner=none", *TINY]
    proc = run_cli(args, cwd=workdir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweeplab").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweeplab.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("sweeplab.kind") == "run"]
    pictures = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    for name in ("optimization_history", "param_importances", "contour", "intermediate_values"):
        assert f"optuna/{name}.png" in pictures, pictures
        assert client.download_artifacts(parent.info.run_id, f"optuna/{name}.png", str(workdir)).endswith(
            ".png"
        )

    table = run_cli([], cwd=workdir, timeout=120, module="sweeps.compare")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"sweep {parent.info.run_id} (") and "FINISHED" in lines[0]
    header = lines[1].split()
    assert header[:2] == ["rank", "run"] and "val_acc" in header and header[-1] == "state"
    rows = [line.split() for line in lines[3:] if line.strip() and line[0].isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    best = {c.info.run_id[:8]: c.data.metrics["best_val_acc"] for c in children}
    assert [r[1] for r in rows] == sorted(best, key=best.__getitem__, reverse=True)  # ranked by objective
    assert {f"{best[r[1]]:.4f}" for r in rows} <= {cell for r in rows for cell in r}
    differ = lines[-1].removeprefix("keys that differ between runs: ").split(", ")
    assert {"lr", "optimizer.beta1"} <= set(differ) and "seed" not in differ
