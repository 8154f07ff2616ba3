"""The books of a search: tells Optuna each trial's outcome, keeps the leaderboard rows, and decides whether
another trial may start (the study's ``n_trials``, the failure budget, the timeout, the deadline, a
``target`` value reached and the ``max_epochs_total`` compute budget); ``stop_reason`` says which ended it.

Failures that do not depend on the sampled values would repeat forever (failed trials do not count toward
``n_trials``): a trial that failed on the configuration itself (bad input, a trainer or accelerator that
cannot be built, an import that fails, a missing file) stops the search at once (exit code 2), and
``max_failures_in_a_row`` (default 5) stops any other run of failures (exit code 1)."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeps.outcome import Outcome, State
from sweeps.search import coordination
from sweeps.search.space import format_value
from sweeps.search.study import FINISHED, StudyRef
from sweeps.support.stop_file import earliest
from sweeps.sweeper.settings import SweeplabSettings
from sweeps.tracking.leaderboard import Row

log = logging.getLogger("sweeplab")
# Errors that come from the configuration or the machine, not from the values a trial sampled.
CONFIG_ERRORS = frozenset(
    {"ConfigError", "ImportError", "ModuleNotFoundError", "FileNotFoundError", "MisconfigurationException"}
)


def expected_duration(durations: Sequence[float]) -> float:
    """How long the next trial will take: the median of the trials so far (0 when there are none)."""
    return statistics.median(durations) if durations else 0.0


class Ledger:
    def __init__(self, ref: StudyRef, settings: SweeplabSettings, metric: str) -> None:
        self.ref, self.settings, self.metric = ref, settings, metric
        self.n_trials = settings.n_trials
        self.start = time.monotonic()
        self.done = ref.finished()
        self.failures = 0
        self.in_a_row = 0  # failed trials since the last one that finished or was pruned
        self.stopped = 0  # trials stopped by the deadline
        self.rows: list[Row] = []
        self.gave_up = ""
        self.exit_code = 1  # of a search that gave up: 2 when the configuration itself failed
        self.stop_reason = ""  # why no further trial starts, once one of the limits says so
        self.on_stale: Callable[[list[int]], None] | None = None  # closes the MLflow runs of stale trials
        self.sync_runs: Callable[[list[str]], Any] | None = None  # waits for runs' tracking writes
        self.complete: Callable[[optuna.Trial], None] | None = None  # samples what depends on the params

    def next_trial(self, distributions: dict[str, Any], wait: bool = True) -> optuna.Trial | None:
        """The study's next trial, claimed safely among every worker on the study (``coordination``)."""
        trial = coordination.next_trial(
            self.ref, distributions, self.n_trials, wait, self.may_start, self.on_stale
        )
        if trial is not None and self.complete:
            self.complete(trial)
        return trial

    def may_start(self, running: int = 0) -> bool:
        if self.gave_up:
            return self._stop(self.gave_up)
        if self.done + running >= self.n_trials:
            return self._stop(f"n_trials={self.n_trials} reached", quiet=True)
        exhausted = getattr(self.ref.study.sampler, "is_exhausted", None)  # a grid sampler: every point ran
        if exhausted is not None and exhausted(self.ref.study):
            return self._stop("every point of the grid has run", quiet=bool(running))
        timeout = self.settings.timeout
        if timeout and time.monotonic() - self.start > float(timeout):
            return self._stop(f"timeout ({timeout:g}s) reached", quiet=bool(running))
        reached = self.target_reached()
        if reached:
            return self._stop(reached, quiet=bool(running))
        spent, budget = self.epochs_spent(), self.settings.max_epochs_total
        if budget is not None and spent >= budget:
            return self._stop(f"max_epochs_total={budget} reached ({spent} epochs trained)", bool(running))
        return not self.settings.deadline or self.fits(running)

    def _stop(self, why: str, quiet: bool = False) -> bool:
        """No new trial starts: remember why (said once, unless ``quiet``)."""
        if why != self.stop_reason and not quiet:
            log.info("search: %s, no new trial starts", why)
        self.stop_reason = why
        return False

    def target_reached(self) -> str:
        """Why the study's best completed value meets ``target`` ("" while it does not)."""
        target = self.settings.target
        if target is None:
            return ""
        values = [t.value for t in self.ref.trials((TrialState.COMPLETE,)) if t.value is not None]
        if not values:
            return ""
        maximize = self.ref.study.direction == optuna.study.StudyDirection.MAXIMIZE
        best = max(values) if maximize else min(values)
        if (best >= target) if maximize else (best <= target):
            return f"target {self.metric} {'>=' if maximize else '<='} {target:g} reached ({best:.4f})"
        return ""

    def epochs_spent(self) -> int:
        """Epochs trained by the study's ended trials (every worker's and earlier runs' included)."""
        if self.settings.max_epochs_total is None:
            return 0
        ended = self.ref.trials((*FINISHED, TrialState.FAIL))
        return sum(int(t.user_attrs.get("sweeplab.epochs", len(t.intermediate_values))) for t in ended)

    def fits(self, running: int) -> bool:
        """Whether a trial started now ends before the deadline, by the median duration of the study's
        completed trials so far (all finished ones while none has completed)."""
        deadline = float(self.settings.deadline or 0)  # asked only when there is one (may_start)
        at = earliest(deadline)  # a stop file moves it earlier
        left = at - time.time()
        trials = self.ref.trials(FINISHED)
        complete = [t for t in trials if t.state == TrialState.COMPLETE] or trials
        need = expected_duration([t.duration.total_seconds() for t in complete if t.duration])
        if left > need:
            self.stop_reason = ""  # a stop moved past the deadline again stops nothing
            return True
        if left <= 0:  # the stop reason the study and the parent run keep, too
            return self._stop("stop requested" if at < deadline else "deadline reached", quiet=bool(running))
        return self._stop(f"deadline in {left:.0f}s, a trial takes ~{need:.0f}s", quiet=bool(running))

    def settle(self, trial: optuna.Trial, outcome: Outcome, began: float) -> Row:
        """Tell Optuna how ``trial`` ended (unless another worker failed it as stale meanwhile); its row."""
        outcome = outcome.for_search()
        frozen = self.ref.storage.get_trial(self.ref.trial_id(trial.number))
        if frozen.state.is_finished():
            # Another worker took it for dead (no heartbeat within the grace period): it runs again there.
            log.warning("search: trial %d was failed as stale meanwhile; its result is dropped", trial.number)
            outcome = outcome.replace(
                state=State.FAILED, value=math.nan, reason="failed as stale by another worker"
            )
        else:
            trial.set_user_attr("sweeplab.epochs", max(outcome.epochs, *frozen.intermediate_values, 0))
            self._tell(trial, outcome)
        coordination.release(self.ref, trial.number)
        self.done += outcome.state in (State.FINISHED, State.PRUNED)
        self.failures += outcome.state is State.FAILED
        self.stopped += outcome.state is State.STOPPED
        shown = {k: format_value(v) for k, v in trial.params.items()}
        row = Row.of(trial.number, shown, outcome, seconds=time.monotonic() - began)
        self.rows.append(row)
        said = f" {self.metric}={outcome.value:.4f}" if outcome.complete else f": {outcome.reason}"
        log.info(
            "search: trial %d %s%s (%d/%d finished)",
            trial.number,
            outcome.state.value.lower(),
            said,
            self.done,
            self.n_trials,
        )
        self._check_budget(trial.number, outcome)
        return row

    def _tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        if outcome.reason:
            trial.set_user_attr("sweeplab.reason", outcome.reason)
        if outcome.samples:  # repeats: each seed's objective (the trial's value is their mean)
            trial.set_user_attr("sweeplab.samples", outcome.samples)
        stopped = outcome.state is State.STOPPED
        if stopped:
            trial.set_user_attr("sweeplab.stopped", "deadline")
        self.ref.study.tell(trial, outcome.value if outcome.complete else None, state=outcome.optuna_state())
        # Not the trial's fault (the deadline; its job cancelled or its node lost): its parameters run again,
        # the deadline's in the next run of the study, a killed job's next in this one.
        if stopped or outcome.state is State.KILLED:
            self.ref.study.enqueue_trial(trial.params, user_attrs={"sweeplab.retry_of": trial.number})

    def _check_budget(self, number: int, outcome: Outcome) -> None:
        if outcome.state in (State.FINISHED, State.PRUNED):
            self.in_a_row = 0
        elif outcome.state is State.FAILED:
            self.in_a_row += 1
        if self.gave_up or outcome.state is not State.FAILED:
            return
        if outcome.bad_input or outcome.error in CONFIG_ERRORS:
            self.exit_code = 2
            self.gave_up = (
                f"trial {number} failed on the configuration, not on its sampled values: {outcome.message}"
            )
            return
        fail_fast, most, row = (
            self.settings.fail_fast,
            self.settings.max_failures,
            self.settings.max_failures_in_a_row,
        )
        if fail_fast or (most is not None and self.failures >= most):
            budget = "fail_fast" if fail_fast else f"max_failures={most}"
            self.gave_up = f"the search gave up after {self.failures} failed trials ({budget})"
        elif row is not None and self.in_a_row >= row:
            budget = f"max_failures_in_a_row={row}"
            self.gave_up = f"the search gave up after {self.in_a_row} failed trials in a row ({budget})"

    def abandon(self, trials: Sequence[optuna.Trial], why: str = "") -> None:
        """Interrupted while these trials ran: failed (``why``), queued for the next run of this command. A
        resumed study's leaderboard shows them STOPPED (``outcome.of_trial``), not as failures of their own:
        they have no ``error.txt``, and their retries are in the study beside them."""
        for trial in trials:
            if why:
                trial.set_user_attr("sweeplab.reason", why)
            trial.set_user_attr("sweeplab.stopped", "interrupted")
            self.ref.study.tell(trial, state=TrialState.FAIL)
            coordination.release(self.ref, trial.number)
            self.ref.study.enqueue_trial(trial.params)
