"""``run_job(cfg, ctx)``, the one path every job takes, called in this process: its sequence and its one
exception policy, each checked on a real tracking process and a real SQLite store in a temporary folder
(one for the module), and a real Optuna study for the trial. One batch per epoch: fast enough for the unit
tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweeps.outcome import State
from sweeps.tracking import session as tracking
from sweeps.training.context import JobContext, TrialHandle
from sweeps.training.job import ERROR_FILE, run_job
from tests.conftest import compose_cfg

QUICK = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "checkpoint=false",
    "trainer.progress=none",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tracking.Session, MlflowClient, str]]:
    """One tracking session (its own process) on a SQLite store, and MLflow's client to read it back."""
    folder = tmp_path_factory.mktemp("job")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = compose_cfg([f"tracking.uri={uri}", f"tracking.artifacts={folder / 'artifacts'}"])
    session = tracking.start(cfg.tracking)
    assert session is not None
    session.sync()  # the store exists before MLflow's client opens it (or both would create it at once)
    try:
        yield session, MlflowClient(uri), uri
    finally:
        session.close()


def job(store: Any, tmp_path: Path, *overrides: str, **handles: Any) -> tuple[DictConfig, JobContext]:
    session, _, uri = store
    cfg = compose_cfg([*QUICK, f"tracking.uri={uri}", *overrides])
    ctx = JobContext(tmp_path, job=0, name=" ".join(overrides) or "defaults", tracker=session, **handles)
    return cfg, ctx


def written(session: tracking.Session) -> None:
    """Wait until every write queued so far is done (a round trip to the tracking process)."""
    session.sync()


def recorded(store: Any, handle: str) -> Any:
    """The MLflow run of a job's outcome (``run_id`` is the session's handle of the run)."""
    session, client, _ = store
    return client.get_run(session.run_ids([handle])[handle])


def test_a_job_trains_and_closes_its_run_finished(store: Any, tmp_path: Path) -> None:
    cfg, ctx = job(store, tmp_path, "optimizer=adam")
    outcome = run_job(cfg, ctx)
    assert outcome.state is State.FINISHED and outcome.epochs == 2 and 0 <= outcome.value <= 1
    run = recorded(store, outcome.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["sweeplab.state"] == "FINISHED"
    assert run.data.params["optimizer._target_"] and run.data.params["params_total"]
    assert run.data.metrics["best_val_acc"] == pytest.approx(outcome.best)
    history = store[1].get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]  # epochs count from 1


def test_bad_input_fails_before_a_run_is_created(store: Any, tmp_path: Path) -> None:
    cfg, ctx = job(store, tmp_path, "lr=-1")
    outcome = run_job(cfg, ctx)
    assert outcome.state is State.FAILED and outcome.bad_input and outcome.run_id == ""
    assert "lr" in outcome.message and not outcome.message.startswith("ConfigError")


def test_an_error_in_training_fails_the_run_with_its_reason_and_traceback(store: Any, tmp_path: Path) -> None:
    cfg, ctx = job(store, tmp_path, "lr=1e6", "optimizer=sgd", "grad_clip=0")
    outcome = run_job(cfg, ctx)
    assert outcome.state is State.FAILED and outcome.error == "NonFiniteLoss" and not outcome.bad_input
    run = recorded(store, outcome.run_id)
    assert run.info.status == "FAILED" and "non-finite loss" in run.data.tags["sweeplab.reason"]
    assert "Traceback" in (tmp_path / ERROR_FILE).read_text()


def test_a_pruned_trial_is_a_result_and_its_run_is_tagged_with_the_trial(store: Any, tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    cfg, ctx = job(store, tmp_path, trial=TrialHandle(trial, study.study_name))
    outcome = run_job(cfg, ctx)
    assert outcome.state is State.PRUNED and outcome.epochs == 1 and "pruned after epoch 1" in outcome.reason
    assert list(study.trials[0].intermediate_values) == [1]  # the epoch reached the trial
    run = recorded(store, outcome.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["sweeplab.state"] == "PRUNED"
    assert run.data.tags["sweeplab.trial"] == str(trial.number)


def test_a_passed_deadline_stops_the_job(store: Any, tmp_path: Path) -> None:
    cfg, ctx = job(store, tmp_path, deadline=1.0)  # long past
    outcome = run_job(cfg, ctx)
    assert outcome.state is State.STOPPED and "deadline" in outcome.reason
    assert recorded(store, outcome.run_id).info.status == "KILLED"


class _Stopped(BaseException):
    """Not an ``Exception``, as a scheduler's stop signal (``Preempted``); Lightning turns a real Ctrl-C
    into ``SystemExit``, another of these (tests/test_stops.py sends real ones)."""


class _Stop(pl.Callback):
    def on_train_batch_end(self, *args: Any) -> None:
        raise _Stopped


def test_a_stop_closes_the_run_killed_and_goes_on_up(store: Any, tmp_path: Path) -> None:
    session, client, _ = store
    cfg, ctx = job(store, tmp_path, "lr=0.0123", callbacks=(_Stop(),))
    with pytest.raises(_Stopped):
        run_job(cfg, ctx)
    written(session)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    [run] = client.search_runs([exp.experiment_id], "params.lr = '0.0123'")
    assert run.info.status == "KILLED" and run.data.tags["sweeplab.state"] == "KILLED"


def test_repeats_nest_a_run_per_seed_under_the_configuration(store: Any, tmp_path: Path) -> None:
    session, client, _ = store
    cfg, ctx = job(store, tmp_path, "repeats=2", "lr=0.0077")
    outcome = run_job(cfg, ctx)
    assert outcome.state is State.FINISHED and len(outcome.samples) == 2
    parent = recorded(store, outcome.run_id)
    assert parent.data.tags["sweeplab.kind"] == "configuration" and parent.info.status == "FINISHED"
    seeds = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["sweeplab.member"] for r in seeds) == ["seed=42", "seed=43"]
    assert {r.info.status for r in seeds} == {"FINISHED"}


def test_a_context_crosses_a_process_boundary_as_plain_data(tmp_path: Path) -> None:
    ctx = JobContext(tmp_path, 3, "3: lr=0.1", ("lr=0.1",), {"loss": "mse"}, deadline=123.0)
    spec = ctx.spec()
    again = JobContext.from_spec(spec)
    assert again == ctx and again.spec() == spec
