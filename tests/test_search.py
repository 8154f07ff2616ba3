"""Optuna searches through the CLI, checked against the study (journal file) and the MLflow store."""

from __future__ import annotations

import os
import random
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

SEARCH = ["-m", "search=lr_betas", "trainer.max_epochs=6", "early_stopping_patience=0", "checkpoint=false"]


def studies(workdir: Path) -> list[optuna.Study]:
    storage = JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    return [
        optuna.load_study(study_name=s.study_name, storage=storage)
        for s in optuna.get_all_study_summaries(storage)
    ]


def children(workdir: Path) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    return [
        r
        for r in client.search_runs([exp.experiment_id], max_results=1000)
        if r.data.tags.get("sweeplab.kind") == "run"
    ]


@pytest.mark.timeout(660)  # run_cli 600, + 60
def test_lr_betas_search_agrees_with_mlflow_and_prunes(workdir: Path):
    proc = run_cli(SEARCH, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best of study" in proc.stdout
    (study,) = studies(workdir)
    trials = study.get_trials()
    assert len(trials) == 12
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner pruned nothing"
    assert any(max(t.intermediate_values) < 6 for t in pruned)  # stopped before the last epoch

    runs = {r.data.tags["sweeplab.trial"]: r for r in children(workdir)}
    assert set(runs) == {str(t.number) for t in trials}
    for trial in trials:
        run = runs[str(trial.number)]
        assert run.data.tags["sweeplab.study"] == study.study_name
        for key, value in trial.params.items():
            assert float(run.data.params[key]) == value, key
        history = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}").get_metric_history(
            run.info.run_id, "val_acc"
        )
        if trial.state == TrialState.COMPLETE:
            assert run.data.tags["sweeplab.state"] == "FINISHED"
            assert run.data.metrics["best_val_acc"] == pytest.approx(trial.value)
            assert len(history) == 6
        else:
            assert (
                run.data.tags["sweeplab.state"] == "PRUNED"
                and "pruned after epoch" in run.data.tags["sweeplab.reason"]
            )
            assert len(history) == max(trial.intermediate_values)  # it ran no epoch after the pruning
    best = next(workdir.glob("mlruns/multirun/*/*/best.yaml")).read_text()
    assert f"trial: {study.best_trial.number}" in best


@pytest.mark.timeout(660)  # run_cli 600, + 60
def test_diverging_trial_fails_with_its_reason_and_the_search_finishes(workdir: Path):
    args = [
        "-m",
        "optimizer=sgd",
        "lr=tag(log, interval(1e-2, 1e2))",
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=2",
        "checkpoint=false",
    ]
    proc = run_cli(args, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed and all(t.params["lr"] > 1 for t in failed)
    assert all("non-finite loss" in t.user_attrs["sweeplab.reason"] for t in failed)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    runs = {r.data.tags["sweeplab.trial"]: r for r in children(workdir)}
    for trial in failed:
        assert runs[str(trial.number)].info.status == "FAILED"
        assert "non-finite loss" in runs[str(trial.number)].data.tags["sweeplab.reason"]


@pytest.mark.timeout(1080)  # 2 x (180 + 2 + 30) + run_cli 600, + 60
def test_killed_search_resumes_without_losing_or_repeating_trials(workdir: Path):
    args = [*SEARCH, "trainer.max_epochs=15"]  # the preset's 12 trials
    rng = random.Random(7)
    finished_before: dict[int, dict] = {}
    for _ in range(2):  # killed twice, at random moments of a trial
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        proc = start_cli(args, workdir, start_new_session=True, **quiet)
        journal = workdir / "mlruns" / "optuna.journal"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            running = journal.exists() and any(
                t.state == TrialState.RUNNING for s in studies(workdir) for t in s.get_trials()
            )
            if running:
                break
            time.sleep(0.3)
        time.sleep(rng.uniform(0.2, 2.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        (study,) = studies(workdir)
        for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
            finished_before[t.number] = t.params

    proc = run_cli(args, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 12
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert {t.number: t.params for t in finished if t.number in finished_before} == finished_before
    killed = study.get_trials(states=(TrialState.FAIL,))
    assert killed, "the killed trials are failed"
    finished_params = [sorted(t.params.items()) for t in finished]
    assert all(sorted(t.params.items()) in finished_params for t in killed), "a killed trial is run again"
    assert not [r for r in children(workdir) if r.info.status == "RUNNING"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lr=interval(0.1,0.01)"], "empty interval"),
        (["lr=tag(log,interval(0,1))"], "log interval must be above 0"),
        (["lr=interval(0.001,0.1)", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials"),
        (
            ["lr=interval(0.001,0.1)", "hydra.sweeper.storage=postgresql://u:Canary9@127.0.0.1:9/db"],
            "hydra.sweeper.storage=postgresql://u:***@",
        ),
        (["lr=interval(0.001,0.1)", "hydra/sweeper/sampler=grid"], "sampler=grid needs choice"),
    ],
)
def test_bad_search_fails_before_any_trial_with_one_line(workdir: Path, args: list[str], message: str):
    proc = run_cli(["-m", *args], cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Canary9" not in proc.stdout + proc.stderr
    assert "epoch" not in proc.stdout
    assert not list(workdir.glob("mlruns/multirun"))


@pytest.mark.parametrize("group", ["sampler", "pruner"])
def test_unknown_sampler_or_pruner_lists_the_options(workdir: Path, group: str):
    proc = run_cli(["-m", "lr=interval(0.001,0.1)", f"hydra/sweeper/{group}=nope"], cwd=workdir)
    assert proc.returncode != 0
    assert f"Could not find 'hydra/sweeper/{group}/nope'" in proc.stderr
    assert ("tpe" if group == "sampler" else "median") in proc.stderr


@pytest.mark.timeout(660)  # run_cli 600, + 60
def test_parallel_trials_survive_a_trial_that_kills_its_process(workdir: Path):
    args = [
        "-m",
        "lr=interval(1e-3, 1e-2)",
        "model._target_=tests.helpers.SelfKillingMLP",
        "+model.die=choice(true, false)",
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "trainer.max_epochs=8",
        "checkpoint=false",
        "early_stopping_patience=0",
    ]
    proc = run_cli(args, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    died = study.get_trials(states=(TrialState.FAIL,))
    assert len(complete) == 3 and all(t.params["+model.die"] is False for t in complete)
    assert died and all("process died" in t.user_attrs["sweeplab.reason"] for t in died)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert not [r for r in children(workdir) if r.info.status == "RUNNING"]


@pytest.mark.timeout(660)  # run_cli 600, + 60
def test_parallel_trials_run_at_the_same_time(workdir: Path):
    args = [
        "-m",
        "lr=interval(1e-3, 1e-2)",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "trainer.max_epochs=60",
        "checkpoint=false",
        "early_stopping_patience=0",
    ]
    proc = run_cli(args, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = children(workdir)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    overlapping = [(a, b) for a in spans for b in spans if a < b and b[0] < a[1]]
    assert overlapping, spans


def test_timeout_stops_starting_trials(workdir: Path):
    args = [
        "-m",
        "lr=interval(1e-3, 1e-2)",
        "hydra.sweeper.n_trials=5000",  # never reached: 100 such trials once took 15 s, now they take less
        "hydra.sweeper.timeout=15",  # the first trial pays for imports (~5 s)
        "trainer.max_epochs=1",  # trials much shorter than the timeout: several start before it
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "tracking=off",
        "checkpoint=false",
        "early_stopping_patience=0",
    ]
    start = time.monotonic()
    proc = run_cli(args, cwd=workdir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "timeout (15s) reached" in proc.stderr + proc.stdout
    (study,) = studies(workdir)
    trials = study.get_trials()
    assert 2 <= len(trials) < 5000
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # The search's clock starts before its first trial: no trial may start 15 s after that one did.
    first = min(t.datetime_start for t in trials)
    late = [t.number for t in trials if (t.datetime_start - first).total_seconds() > 15]
    assert not late, f"trials {late} started after the timeout"
    assert time.monotonic() - start < 120


def test_fail_fast_gives_up_at_the_first_failed_trial(workdir: Path):
    args = [
        "-m",
        "optimizer=sgd",
        "lr=interval(50.0, 100.0)",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.fail_fast=true",
        "trainer.max_epochs=2",
        "checkpoint=false",
    ]
    proc = run_cli(args, cwd=workdir, timeout=240)
    assert proc.returncode == 1
    assert "gave up after 1 failed trials (fail_fast)" in proc.stderr
    (study,) = studies(workdir)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]


def test_the_study_is_named_after_its_preset_and_the_same_command_resumes_it(workdir: Path):
    quick = ["-m", "search=lr_betas", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    for total in (1, 2):  # the study's total: the second command resumes the first's study for one more
        proc = run_cli([*quick, f"hydra.sweeper.n_trials={total}"], cwd=workdir)
        assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    assert study.study_name.startswith("lr_betas ") and len(study.study_name) < 80
    assert len(study.get_trials()) == 2
    # the second command's, as typed: it resumes the study (hydra.sweeper.* included)
    assert study.user_attrs["sweeplab.command"].endswith(
        "-m " + " ".join([*quick[1:], "hydra.sweeper.n_trials=2"])
    )
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    parents = client.search_runs(
        [client.get_experiment_by_name("sweeplab").experiment_id], "tags.`sweeplab.kind` = 'sweep'"
    )
    assert {p.data.tags["sweeplab.study"] for p in parents} == {study.study_name}
    for parent in parents:
        assert parent.data.tags["sweeplab.command"].startswith("python -m sweeps.run -m search=lr_betas")
