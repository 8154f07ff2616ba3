"""The books of a search, on a real Optuna journal file in a temporary folder: what each outcome tells
Optuna, the study total, the failure budget, and trials whose process died."""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers import RandomSampler
from optuna.trial import TrialState

from sweeps.outcome import DeadlineReached, Outcome, Pruned, State
from sweeps.search import coordination
from sweeps.search.study import StudyRef, open_study
from sweeps.support.errors import ConfigError
from sweeps.support.processes import host, process_start
from sweeps.sweeper.ledger import Ledger
from sweeps.sweeper.settings import SweeplabSettings

SPACE = {"x": FloatDistribution(0, 1)}


def opened(tmp_path: Path, **settings: object) -> tuple[StudyRef, Ledger]:
    config = SweeplabSettings(storage=str(tmp_path / "optuna.journal"), **settings)  # type: ignore[arg-type]
    ref = open_study(config.storage_url, "books", "max", RandomSampler(seed=0), None)
    return ref, Ledger(ref, config, "val_acc")


def settle(ledger: Ledger, outcome: Outcome) -> tuple[int, str]:
    trial = ledger.next_trial(SPACE)
    assert trial is not None
    row = ledger.settle(trial, outcome, time.monotonic())
    return trial.number, row.state


def test_each_outcome_is_told_once_and_the_study_total_holds(tmp_path: Path):
    ref, ledger = opened(tmp_path, n_trials=3)
    assert settle(ledger, Outcome(State.FINISHED, 0.5, epochs=2)) == (0, "FINISHED")
    assert settle(ledger, Outcome.of_error(Pruned(1, "val_acc", 0.1))) == (1, "PRUNED")
    assert settle(ledger, Outcome.of_error(DeadlineReached("late"))) == (2, "STOPPED")
    assert settle(ledger, Outcome.of_error(ValueError("boom"))) == (3, "FAILED")
    states = [t.state for t in ref.study.get_trials()]
    assert states[:4] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    stopped, failed = ref.study.get_trials()[2:4]
    assert stopped.user_attrs["sweeplab.stopped"] == "deadline"
    assert failed.user_attrs["sweeplab.reason"] == "ValueError: boom"
    # The stopped trial was queued again, and the next trial asked for ran it.
    assert failed.params == stopped.params and failed.user_attrs["sweeplab.retry_of"] == 2
    assert (ledger.done, ledger.failures, ledger.stopped) == (2, 1, 1)
    assert settle(ledger, Outcome(State.FINISHED, 0.7)) == (4, "FINISHED")
    assert not ledger.may_start() and ledger.next_trial(SPACE) is None  # three finished: the total


def test_a_non_finite_objective_fails_the_trial(tmp_path: Path):
    ref, ledger = opened(tmp_path)
    assert settle(ledger, Outcome(State.FINISHED, math.nan)) == (0, "FAILED")
    (trial,) = ref.study.get_trials()
    assert (
        trial.state == TrialState.FAIL and trial.user_attrs["sweeplab.reason"] == "non-finite objective (nan)"
    )


@pytest.mark.parametrize(("settings", "after"), [({"fail_fast": True}, 1), ({"max_failures": 2}, 2)])
def test_the_failure_budget_stops_new_trials(tmp_path: Path, settings: dict, after: int):
    _, ledger = opened(tmp_path, **settings)
    for _ in range(after):
        assert ledger.may_start()
        settle(ledger, Outcome.of_error(RuntimeError("x")))
    assert not ledger.may_start() and "gave up after" in ledger.gave_up


def test_failures_in_a_row_stop_the_search_by_default_and_a_success_resets_them(tmp_path: Path):
    _, ledger = opened(tmp_path, n_trials=100)
    for _ in range(4):
        settle(ledger, Outcome.of_error(RuntimeError("diverged")))
    settle(ledger, Outcome(State.FINISHED, 0.5))  # the count starts again
    for _ in range(4):
        settle(ledger, Outcome.of_error(RuntimeError("diverged")))
    assert ledger.may_start()
    settle(ledger, Outcome.of_error(RuntimeError("diverged")))
    assert not ledger.may_start() and ledger.exit_code == 1
    assert ledger.stop_reason == "the search gave up after 5 failed trials in a row (max_failures_in_a_row=5)"


@pytest.mark.parametrize(
    "error",
    [ConfigError("trainer: No supported gpu backend found!"), ModuleNotFoundError("No module named 'x'")],
)
def test_a_failure_of_the_configuration_stops_the_search_at_once(tmp_path: Path, error: Exception):
    _, ledger = opened(tmp_path, n_trials=100)
    settle(ledger, Outcome.of_error(error))
    assert not ledger.may_start() and ledger.exit_code == 2
    assert ledger.gave_up == f"trial 0 failed on the configuration, not on its sampled values: {error}"


def test_a_trial_whose_process_died_here_is_failed_and_queued_again(tmp_path: Path):
    ref, _ = opened(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone, live = ref.study.ask(SPACE), ref.study.ask(SPACE)
    gone.set_user_attr("sweeplab.owner", {"host": host(), "pid": dead.pid, "start": ""})
    live.set_user_attr(
        "sweeplab.owner", {"host": host(), "pid": os.getpid(), "start": process_start(os.getpid())}
    )
    assert coordination.recover_stale(ref) == [gone.number]
    trials = ref.study.get_trials()
    assert trials[gone.number].state == TrialState.FAIL and trials[live.number].state == TrialState.RUNNING
    assert trials[gone.number].user_attrs["sweeplab.reason"] == coordination.STALE
    (queued,) = ref.study.get_trials(states=(TrialState.WAITING,))
    assert (
        queued.params == trials[gone.number].params and queued.user_attrs["sweeplab.retry_of"] == gone.number
    )
    assert coordination.recover_stale(ref) == []  # once


def test_a_result_arriving_after_another_worker_failed_the_trial_is_dropped(tmp_path: Path):
    ref, ledger = opened(tmp_path)
    trial = ledger.next_trial(SPACE)
    assert trial is not None
    ref.storage.set_trial_state_values(ref.trial_id(trial.number), state=TrialState.FAIL)
    row = ledger.settle(trial, Outcome(State.FINISHED, 0.9), time.monotonic())
    assert row.state == "FAILED" and row.reason == "failed as stale by another worker"
    assert [t.state for t in ref.study.get_trials()] == [TrialState.FAIL]


def test_a_trial_asked_but_never_claimed_is_failed_and_queued_again(tmp_path: Path):
    """A process killed between Optuna's ask and its claim (both under the study's lock) leaves a RUNNING
    trial with no owner: it holds a slot of the study until the next claim fails and requeues it."""
    ref, ledger = opened(tmp_path, n_trials=2)
    orphan = ref.study.ask(SPACE)  # what the killed process got from Optuna, and never claimed
    assert ledger.next_trial(SPACE, wait=False) is not None
    (failed,) = ref.trials((TrialState.FAIL,))
    assert failed.number == orphan.number
    waiting = ref.trials((TrialState.WAITING,)) + ref.trials((TrialState.RUNNING,))
    assert any(t.params == failed.params for t in waiting)  # its parameters run again
