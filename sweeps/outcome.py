"""How a run or trial ended: one ``Outcome`` that every channel carries (Hydra's ``JobReturn``, the worker
pipe, a DDP job's ``result.json``), and the one place that maps it to MLflow's and Optuna's states and
formats the reason.

States: FINISHED (trained to its end), PRUNED (stopped early by the pruner: a result, not a failure),
STOPPED (the sweep's deadline passed: run again next time), FAILED (an error), KILLED (stopped from
outside: Ctrl-C, a scheduler's signal).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from sweeps.support.errors import ConfigError
from sweeps.support.interrupt import Interrupted
from sweeps.support.secrets import redact_text

RESULT = "result.json"  # a job's outcome in its folder: a DDP job's for its sweep, a grid job's to resume

REASON_LENGTH = 500
# Metrics of the test split, whatever separates the split's name from the rest: test_acc, test/acc, test.acc
TEST_METRIC = re.compile(r"test[^A-Za-z0-9]")


def is_test_metric(name: str) -> bool:
    """Whether ``name`` is a metric of ``trainer.test`` (sweeplab's ``test_acc``, a user's ``test/acc``)."""
    return TEST_METRIC.match(name) is not None


def test_metric_of(metric: str) -> str | None:
    """The test split's counterpart of a validation metric (``val/acc`` -> ``test/acc``), or None."""
    found = re.match(r"val([^A-Za-z0-9].*)", metric)
    return f"test{found.group(1)}" if found else None


class State(str, Enum):
    FINISHED = "FINISHED"
    PRUNED = "PRUNED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    KILLED = "KILLED"


# MLflow has no pruned or stopped status: a pruned run did what it was asked (FINISHED), a stopped one did
# not end on its own (KILLED); ``sweeplab.state`` on the run keeps sweeplab's state.
MLFLOW_STATUS = {
    State.FINISHED: "FINISHED",
    State.PRUNED: "FINISHED",
    State.STOPPED: "KILLED",
    State.FAILED: "FAILED",
    State.KILLED: "KILLED",
}


class EndedEarly(Exception):  # noqa: N818 - reads as what happened, like optuna.TrialPruned
    """A trial stopped on purpose before its last epoch; ``state`` says why. Raised inside ``fit``."""

    state: ClassVar[State]


class Pruned(EndedEarly):
    """The pruner stopped the trial after ``epoch``."""

    state = State.PRUNED

    def __init__(self, epoch: int, metric: str, value: float) -> None:
        super().__init__(f"pruned after epoch {epoch} ({metric}={value:.4g})")
        self.epoch = epoch


class DeadlineReached(EndedEarly):
    """The sweep's deadline passed while the trial trained."""

    state = State.STOPPED


def reason(err: BaseException) -> str:
    """The one-line reason of an error: its message for a trial that ended early, else ``Type: message``;
    secrets masked."""
    text = str(err) if isinstance(err, EndedEarly | Interrupted) else f"{type(err).__name__}: {err}"
    return redact_text((text.strip().splitlines() or [type(err).__name__])[0])[:REASON_LENGTH]


@dataclass(frozen=True)
class Outcome:
    """The end of one run. ``value`` is the objective (NaN unless FINISHED): the value of its best epoch, or
    of its last one with ``objective.reduce=last``; ``best`` is always the best epoch's. ``run_id`` is its
    MLflow run id, or this process's tracking handle for it until resolved (``Session.run_ids``)."""

    state: State
    value: float = math.nan
    metric: str = "objective"
    mode: str = "max"
    epochs: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    run_id: str = ""
    reason: str = ""
    best: float = math.nan
    samples: dict[str, float] = field(default_factory=dict)  # repeats: each seed's (or fold's) objective
    error: str = ""  # the type of the error that ended it, if one did
    bad_input: bool = False  # ended by bad input (a ``ConfigError``): a command exits 2 for it

    @classmethod
    def of_error(cls, err: BaseException, **details: Any) -> Outcome:
        """An error raised by a run: PRUNED or STOPPED for one that ended early, KILLED for anything that is
        not an ``Exception`` (Ctrl-C, a stop signal), FAILED otherwise."""
        if isinstance(err, EndedEarly):
            state = err.state
            details.setdefault("epochs", getattr(err, "epoch", 0))
        else:
            state = State.FAILED if isinstance(err, Exception) else State.KILLED
        bad = isinstance(err, ConfigError)
        return cls(state, reason=reason(err), error=type(err).__name__, bad_input=bad, **details)

    @property
    def message(self) -> str:
        """The reason without the error's type: what a command prints after ``error:``."""
        return self.reason.removeprefix(f"{self.error}: ") if self.error else self.reason

    def __float__(self) -> float:
        """The objective, so that any Hydra sweeper can read a job's return value as a number."""
        return float(self.value)

    def replace(self, **changes: Any) -> Outcome:
        return dataclasses.replace(self, **changes)

    @property
    def mlflow_status(self) -> str:
        return MLFLOW_STATUS[self.state]

    @property
    def complete(self) -> bool:
        """Finished with a finite objective: the only outcome Optuna accepts as COMPLETE."""
        return self.state is State.FINISHED and math.isfinite(self.value)

    def for_search(self) -> Outcome:
        """As a search counts it: a FINISHED run whose objective is not finite failed (Optuna refuses NaN)."""
        if self.state is State.FINISHED and not self.complete:
            return self.replace(state=State.FAILED, reason=f"non-finite objective ({self.value})")
        return self

    def optuna_state(self) -> Any:
        """Optuna's ``TrialState`` for this outcome (STOPPED and KILLED are FAIL: the trial runs again)."""
        from optuna.trial import TrialState

        if self.complete:
            return TrialState.COMPLETE
        return TrialState.PRUNED if self.state is State.PRUNED else TrialState.FAIL

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``result.json``); ``from_dict`` reads it back."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        for key in ("value", "best"):  # JSON has no NaN
            data[key] = None if math.isnan(data[key]) else data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        numbers = {k: math.nan if data.get(k) is None else data[k] for k in ("value", "best")}
        return cls(**{**data, "state": State(data["state"]), **numbers})

    def save(self, folder: Path) -> None:
        """As the job folder's ``result.json``, written whole: a reader never sees half a file."""
        partial = folder / f".{RESULT}"
        partial.write_text(json.dumps(self.to_dict()))
        partial.replace(folder / RESULT)

    @classmethod
    def load(cls, folder: Path) -> Outcome:
        """What ``save`` wrote in ``folder``."""
        return cls.from_dict(json.loads((folder / RESULT).read_text()))


def of_trial(trial: Any) -> State | None:
    """How an Optuna trial (a ``FrozenTrial``) ended, read back from the study; None while it has not."""
    name = trial.state.name
    if name == "FAIL":
        return State.STOPPED if trial.user_attrs.get("sweeplab.stopped") else State.FAILED
    return {"COMPLETE": State.FINISHED, "PRUNED": State.PRUNED}.get(name)
