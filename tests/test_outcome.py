"""The one outcome type: how errors map to states, and states to MLflow's and Optuna's."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.outcome import DeadlineReached, Outcome, Pruned, State, of_trial, reason


@pytest.mark.parametrize(
    ("err", "state", "mlflow", "optuna_state"),
    [
        (Pruned(3, "val_acc", 0.5), State.PRUNED, "FINISHED", TrialState.PRUNED),
        (DeadlineReached("stopped at the deadline"), State.STOPPED, "KILLED", TrialState.FAIL),
        (ValueError("bad"), State.FAILED, "FAILED", TrialState.FAIL),
        (KeyboardInterrupt(), State.KILLED, "KILLED", TrialState.FAIL),
    ],
)
def test_an_error_maps_to_one_state_and_each_state_to_mlflow_and_optuna(err, state, mlflow, optuna_state):
    outcome = Outcome.of_error(err, run_id="run3")
    assert outcome.state is state and outcome.run_id == "run3"
    assert outcome.mlflow_status == mlflow
    assert outcome.optuna_state() == optuna_state
    assert math.isnan(outcome.value) and not outcome.complete


def test_reasons_are_one_redacted_line_and_an_early_end_says_only_what_happened():
    assert reason(Pruned(3, "val_acc", 0.51234)) == "pruned after epoch 3 (val_acc=0.5123)"
    assert reason(ValueError("no\nsecond line")) == "ValueError: no"
    assert reason(RuntimeError("postgresql://u:hunter2@db/x")) == "RuntimeError: postgresql://u:***@db/x"
    assert len(reason(ValueError("x" * 2000))) == 500
    assert reason(ValueError()) == "ValueError:"


def test_a_finished_run_is_complete_only_with_a_finite_objective():
    done = Outcome(State.FINISHED, 0.9, metric="val_acc")
    assert done.complete and done.optuna_state() == TrialState.COMPLETE and float(done) == 0.9
    assert done.for_search() is done
    nan = Outcome(State.FINISHED, math.nan)
    assert nan.optuna_state() == TrialState.FAIL
    failed = nan.for_search()
    assert failed.state is State.FAILED and failed.reason == "non-finite objective (nan)"
    assert failed.mlflow_status == "FAILED"


def test_round_trip_through_json_as_a_ddp_job_writes_it():
    outcome = Outcome(
        State.FINISHED, 0.75, "val_acc", "max", 4, 1.5, {"val_acc": 0.75}, "best.ckpt", "abc", "", best=0.8
    )
    assert Outcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome
    pruned = Outcome.of_error(Pruned(2, "val_loss", 1.0))
    back = Outcome.from_dict(json.loads(json.dumps(pruned.to_dict())))
    assert back.state is State.PRUNED and math.isnan(back.value) and back.reason == pruned.reason
    assert math.isnan(back.best)


def test_a_study_trial_reads_back_as_the_state_it_was_told():
    def trial(state: TrialState, **attrs: str) -> optuna.trial.FrozenTrial:
        return optuna.create_trial(
            state=state, value=1.0 if state == TrialState.COMPLETE else None, user_attrs=attrs
        )

    assert of_trial(trial(TrialState.COMPLETE)) is State.FINISHED
    assert of_trial(trial(TrialState.PRUNED)) is State.PRUNED
    assert of_trial(trial(TrialState.FAIL)) is State.FAILED
    assert of_trial(trial(TrialState.FAIL, **{"sweeplab.stopped": "deadline"})) is State.STOPPED
    assert of_trial(trial(TrialState.WAITING)) is None
