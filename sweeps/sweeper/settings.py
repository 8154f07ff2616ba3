"""The sweeper's settings (``hydra.sweeper.*``) as one typed structured config: defaults in one place, and
types checked by Hydra when it composes the config (``n_trials=abc`` fails there, naming the key).

``conf/hydra/sweeper/sweeplab.yaml`` extends ``sweeplab_settings`` and picks the sampler and pruner from
its groups; ``sweeplab_standalone`` is the same with Optuna's TPE sampler and median pruner built in, for
Hydra apps outside this repository. Only what Hydra cannot check (ranges, combinations) is in ``check``.
Standard library and Hydra only: the plugin module imports this at every start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from sweeps.search import DEFAULT_STORAGE
from sweeps.support.errors import ConfigError


@dataclass
class SweeplabSettings:
    _target_: str = "hydra_plugins.sweeplab_sweeper.SweeplabSweeper"
    _recursive_: bool = False  # the sampler needs the search space first: sweeplab builds it
    validate_all: bool = True  # check every job's config before the first one trains
    params: dict[str, Any] | None = None  # {key: search expression}: an Optuna search
    n_trials: int = 20  # the study's total of finished (complete or pruned) trials, across resumed runs
    n_jobs: int = 1  # trials running at once
    trials_per_gpu: int = 1  # > 1 lets that many one-device trials share a GPU
    timeout: float | None = None  # seconds after which no new trial starts
    deadline: float | None = None  # Unix time: no trial starts that would not end before it
    storage: str | None = None  # None: a journal file under mlruns/; or sqlite:///..., postgresql://...
    study_name: str | None = None  # None: named after the search, so that the same command resumes it
    max_failures: int | None = None  # stop after this many failed trials
    # No search fails forever: stop after this many failed trials in a row (null: never; a failure the
    # configuration causes, not the sampled values, stops it at once: ``Ledger``).
    max_failures_in_a_row: int | None = 5
    target: float | None = None  # stop starting trials once the study's best objective reaches this value
    max_epochs_total: int | None = None  # stop starting trials once its trials trained this many epochs
    fail_fast: bool = False  # stop at the first failed trial
    resume: bool = True  # a grid: the same command runs only the jobs not finished; false starts over
    heartbeat_interval: int = 10  # seconds between heartbeats of a running trial (database storage only)
    grace_period: int = 60  # a trial without a heartbeat this long is failed and queued again
    storage_retry_seconds: float = 60  # a database away this long: its calls wait and retry, then stop
    direction: Any = None  # Hydra's Optuna sweeper's key: minimize | maximize, for another app's return value
    sampler: Any = None  # {_target_: optuna.samplers..., ...}
    pruner: Any = None  # {_target_: optuna.pruners..., ...}
    nightly: dict[str, Any] = field(default_factory=dict)  # read by ``sweeps.nightly``
    # Left by the sweeper for jobs that a launcher runs elsewhere (``launch.submitit``):
    sweeplab_sweep_id: str | None = None
    sweeplab_study: str | None = None
    sweeplab_trial: int | None = None

    @classmethod
    def of(cls, values: Any) -> SweeplabSettings:
        """The settings from what Hydra passed the sweeper (keys it does not know are ignored)."""
        plain: dict[str, Any] = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in values.items()
        }
        return cls(**{f.name: plain[f.name] for f in fields(cls) if f.name in plain})

    def check_search(self) -> None:
        """What an Optuna search needs beyond the types; raises ConfigError naming the key."""
        for key in ("n_trials", "n_jobs", "trials_per_gpu"):
            if getattr(self, key) < 1:
                raise ConfigError(f"hydra.sweeper.{key}={getattr(self, key)} must be >= 1")
        if self.target is not None and self.target != self.target:
            raise ConfigError("hydra.sweeper.target=nan: give a number (or null for none)")
        for key in ("max_failures", "max_failures_in_a_row", "max_epochs_total"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"hydra.sweeper.{key}={getattr(self, key)} must be >= 1 (or null for none)")
        if "://" not in self.storage_url:
            return
        for key in ("heartbeat_interval", "grace_period"):
            if getattr(self, key) < 1:
                raise ConfigError(
                    f"hydra.sweeper.{key}={getattr(self, key)} must be a whole number of seconds >= 1"
                )
        if not self.storage_retry_seconds >= 0:
            raise ConfigError(
                f"hydra.sweeper.storage_retry_seconds={self.storage_retry_seconds} must be >= 0 (seconds)"
            )
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"hydra.sweeper.grace_period={self.grace_period} must be longer than "
                f"heartbeat_interval={self.heartbeat_interval}"
            )

    def mode(self) -> str:
        """``direction`` as min or max (default max): the objective of an app that is not sweeplab's
        training, which returns its value (sweeplab's training uses ``objective.mode``)."""
        direction = self.direction
        if isinstance(direction, list | tuple):
            if len(direction) != 1:
                raise ConfigError(f"hydra.sweeper.direction={direction}: one objective only")
            direction = direction[0]
        modes = {None: "max", "maximize": "max", "max": "max", "minimize": "min", "min": "min"}
        if direction not in modes:
            raise ConfigError(f"hydra.sweeper.direction={direction}: allowed are minimize, maximize")
        return modes[direction]

    @property
    def storage_url(self) -> str:
        return self.storage or DEFAULT_STORAGE


@dataclass
class StandaloneSettings(SweeplabSettings):
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner"})


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="sweeplab_settings", node=SweeplabSettings, provider="sweeplab")
    store.store(
        group="hydra/sweeper", name="sweeplab_standalone", node=StandaloneSettings, provider="sweeplab"
    )
    # ``override /hydra/sweeper: optuna``, as search files written for Hydra's Optuna sweeper say
    # (lightning-hydra-template's hparams_search): sweeplab's sweeper, in sweeplab's app and any other.
    store.store(group="hydra/sweeper", name="optuna", node=StandaloneSettings, provider="sweeplab")
