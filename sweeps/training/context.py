"""What one job is run with: ``JobContext``, passed to ``run_job`` by whoever runs the job, never read from
a module global.

A context crosses a process boundary (a trial worker, a DDP rank, a submitit job) only as the plain data of
``JobContext.spec``; ``JobContext.attach`` opens, in the receiving process, the tracking session and the
Optuna trial that spec names. Those two functions are the one place where that happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeps.support.stop_file import earliest
from sweeps.tracking import session as tracking


@dataclass(frozen=True)
class TrialHandle:
    """The Optuna trial a job reports to (pruning), and how another process loads the same one."""

    trial: Any  # optuna.Trial
    study: str  # the study's name
    storage: str = ""  # its storage URL or journal path
    pruner: dict[str, Any] | None = None  # the pruner's config: a loaded study needs it to decide the same

    @property
    def number(self) -> int:
        return int(self.trial.number)

    def spec(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage, "pruner": self.pruner, "number": self.number}

    @classmethod
    def load(cls, spec: dict[str, Any]) -> TrialHandle:
        """The trial ``spec`` names, from its study's storage (Optuna loads here)."""
        from sweeps.search.study import load

        ref = load(spec["study"], spec.get("storage") or None, spec.get("pruner"))
        return cls(
            ref.trial(int(spec["number"])), spec["study"], spec.get("storage") or "", spec.get("pruner")
        )


@dataclass(frozen=True)
class JobContext:
    """Everything ``run_job`` needs besides the config.

    ``tracker`` is None with tracking off and in a DDP rank other than the first; ``trial`` is None outside a
    search (and in the other DDP ranks, which follow the first one's pruning: ``follows_trial``);
    ``deadline`` is the sweep's (a Unix time; the stop file can move it earlier); ``job`` is the job's
    number in its sweep, None for a single run.
    """

    output_dir: Path | None  # None: nothing is written (no checkpoints)
    job: int | None = None
    name: str = ""
    overrides: tuple[str, ...] = ()
    choices: dict[str, Any] = field(default_factory=dict)
    tracker: tracking.Session | None = None
    trial: TrialHandle | None = None
    deadline: float | None = None
    first_rank: bool = True  # records the run and reports to the trial (DDP: rank 0)
    follows_trial: bool = False  # a DDP rank other than the first of a trial: stops when the first one prunes
    parent_run: str | None = None  # the run this one nests under (a seed's configuration run)
    callbacks: tuple[Any, ...] = ()  # Lightning callbacks of the caller (a seed's turns)
    label: str = ""  # the seed or fold a member of ``repeats``/``cv`` trains ("seed=43", "fold=2/5")

    @property
    def prefix(self) -> str:
        """How log lines name the job, and the seed or fold (members train in turns: lines interleave)."""
        named = " ".join(
            str(part) for part in (f"job {self.job}" if self.job is not None else "", self.label) if part
        )
        return f"[{named}] " if named else ""

    @property
    def sweep_id(self) -> str | None:
        """The sweep's parent run, if this job records under one."""
        return self.tracker.sweep_id if self.tracker is not None and self.tracker.parent else None

    def current_deadline(self) -> float | None:
        """The deadline, or the stop file's time when that is earlier."""
        return None if self.deadline is None else earliest(self.deadline)

    def run_tags(self) -> dict[str, str]:
        """Tags of the job's MLflow run that say which trial it is."""
        if self.trial is None:
            return {}
        return {"sweeplab.trial": str(self.trial.number), "sweeplab.study": self.trial.study}

    def spec(self) -> dict[str, Any]:
        """Plain data for another process: everything but the live handles, which it opens (``attach``)."""
        return {
            "output_dir": str(self.output_dir) if self.output_dir is not None else None,
            "job": self.job,
            "name": self.name,
            "overrides": list(self.overrides),
            "choices": self.choices,
            "sweep_id": self.sweep_id,
            "trial": self.trial.spec() if self.trial is not None else None,
            "deadline": self.deadline,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], **handles: Any) -> JobContext:
        """The context ``spec`` describes, with the live ``handles`` (tracker, trial) this process opened."""
        return cls(
            output_dir=Path(spec["output_dir"]) if spec.get("output_dir") else None,
            job=spec.get("job"),
            name=spec.get("name", ""),
            overrides=tuple(spec.get("overrides", ())),
            choices=spec.get("choices") or {},
            deadline=spec.get("deadline"),
            **handles,
        )

    @classmethod
    def attach(
        cls, spec: dict[str, Any], tracking_cfg: DictConfig | None, first_rank: bool = True
    ) -> JobContext:
        """The context ``spec`` describes, in a process of its own: a tracking session joined to the sweep
        (opened by the first rank only, and only with tracking on) and the trial loaded from its study."""
        tracker = None
        if first_rank and tracking_cfg is not None:
            tracker = tracking.start(tracking_cfg, spec.get("sweep_id"))
        trial_spec = spec.get("trial")
        trial = TrialHandle.load(trial_spec) if trial_spec and first_rank else None
        return cls.from_spec(
            spec,
            tracker=tracker,
            trial=trial,
            first_rank=first_rank,
            follows_trial=bool(trial_spec) and not first_rank,
        )
