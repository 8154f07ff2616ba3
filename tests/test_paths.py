"""Paths a user can take that nothing else runs: the Slurm launcher preset, fp16 mixed precision on a CPU, a
search that runs out of its failure budget, and a single run that diverges."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import CONF, ONE_BATCH, run_cli
from tests.test_search import studies


def test_slurm_launcher_preset_composes_into_submitits_slurm_launcher():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.timeout_min == 60 and launcher.max_num_timeout == 3
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # each job's own folder
    assert launcher.signal_delay_s == 120 and launcher.cpus_per_task == 2


def store(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def only_run(workdir: Path):
    client = store(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("sweeplab").experiment_id])
    return run


def test_fp16_mixed_on_a_cpu_trains_in_bf16_as_lightning_says(workdir: Path):
    proc = run_cli(["precision=16-mixed", *ONE_BATCH], cwd=workdir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # Lightning has no fp16 autocast on a CPU: it warns and trains in bf16-mixed.
    assert "precision='bf16-mixed'" in proc.stderr
    run = only_run(workdir)
    assert run.info.status == "FINISHED" and run.data.params["precision"] == "16-mixed"
    assert "best_val_acc" in run.data.metrics


def test_single_run_that_diverges_says_so_in_one_line_and_fails_its_run(workdir: Path):
    proc = run_cli(["optimizer=sgd", "lr=100", "trainer.max_epochs=2", "checkpoint=false"], cwd=workdir)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: training diverged: non-finite loss ("), lines
    run = only_run(workdir)
    assert run.info.status == "FAILED" and "non-finite loss" in run.data.tags["sweeplab.reason"]


@pytest.mark.timeout(300)  # run_cli 240, + 60
def test_search_that_reaches_max_failures_stops_and_exits_1(workdir: Path):
    args = ["-m", "optimizer=sgd", "lr=interval(50.0, 100.0)", "hydra.sweeper.n_trials=6"]
    args += ["hydra.sweeper.max_failures=2", "hydra/sweeper/pruner=none", "trainer.max_epochs=2"]
    proc = run_cli([*args, "checkpoint=false", "tracking=off"], cwd=workdir, timeout=240)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: the search gave up after 2 failed trials (max_failures=2)"
    )
    (study,) = studies(workdir)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]
