"""Optuna search for the sweeper: the search space from Hydra's sweep syntax, a persistent study that
resumes, and the trial currently running in this process (for pruning).

Why not the published ``hydra-optuna-sweeper``: it pins ``optuna<3`` and has neither pruning nor resume.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from hydra.utils import instantiate
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sweeps import shared
from sweeps.errors import ConfigError
from sweeps.secrets import redact_text

DEFAULT_STORAGE = "mlruns/optuna.journal"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Space:
    """What each trial overrides: sampled parameters and fixed values."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        return [*self.fixed, *(f"{k}={format_value(v)}" for k, v in params.items())]


def format_value(value: Any) -> str:
    """A sampled value as an override string (floats round-trip exactly)."""
    return repr(value) if isinstance(value, float) else str(value)


def parse_space(parser: OverridesParser, arguments: Sequence[str], params: dict[str, str] | None) -> Space:
    """``params`` from the config, then the command line (which wins for the same key)."""
    merged: dict[str, Override] = {}
    texts = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    for text in texts:
        try:
            override = parser.parse_overrides([text])[0]
        except HydraException as err:
            raise ConfigError(f"malformed search expression {text!r}: {str(err).splitlines()[0]}") from None
        merged[override.get_key_element()] = override
    space = Space()
    for key, override in merged.items():
        if override.is_sweep_override():
            space.distributions[key] = distribution(key, override.value())
        else:
            space.fixed.append(f"{key}={override.get_value_element_as_str()}")
    if not space.distributions:
        raise ConfigError(
            "the search has no parameter to search (use interval(...), choice(...) or range(...))"
        )
    return space


def distribution(key: str, sweep: Any) -> BaseDistribution:
    """Hydra's sweep objects as Optuna distributions; a ``log`` tag asks for a log scale."""
    log = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if not low < high:
            raise ConfigError(
                f"{key}: empty interval({low}, {high}); the lower bound must be below the upper"
            )
        if log and low <= 0:
            raise ConfigError(f"{key}: a log interval must be above 0, got interval({low}, {high})")
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if isinstance(sweep, RangeSweep):
        values = list(_range_values(sweep))
        if not values:
            raise ConfigError(f"{key}: empty range({sweep.start}, {sweep.stop}, {sweep.step})")
        if log and values[0] <= 0:
            raise ConfigError(f"{key}: a log range must be above 0")
        if all(isinstance(v, int) for v in values):
            step = int(sweep.step) if not log else 1
            return IntDistribution(values[0], values[-1], step=step, log=log)
        return CategoricalDistribution(values)
    if isinstance(sweep, ChoiceSweep):
        if not sweep.list:
            raise ConfigError(f"{key}: empty choice()")
        return CategoricalDistribution([str(v) if not isinstance(v, int | float) else v for v in sweep.list])
    raise ConfigError(f"{key}: unsupported search expression")


def _range_values(sweep: RangeSweep) -> Sequence[float]:
    start, stop, step = sweep.start, sweep.stop, sweep.step or 1
    count = max(0, math.ceil((stop - start) / step))
    return [start + i * step for i in range(count)]


def study_name(space: Space, arguments: Sequence[str]) -> str:
    """The same search (space and fixed overrides) gets the same name, so that rerunning resumes it."""
    key = repr((sorted((k, repr(d)) for k, d in space.distributions.items()), sorted(space.fixed)))
    return "sweeplab-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def storage(url: str | None, heartbeat: int | None = None, grace: int | None = None) -> Any:
    """A journal file by default (safe for several processes on one machine); any RDB URL otherwise, with
    heartbeats every ``heartbeat`` seconds (stale after ``grace``) so that workers elsewhere can tell a
    trial whose worker died (see sweeps/shared.py)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    url = url or DEFAULT_STORAGE
    try:
        if "://" in url:
            return shared.rdb_storage(url, heartbeat, grace)
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    except Exception as err:  # noqa: BLE001 - SQLAlchemy and drivers raise many kinds
        reason = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
        raise ConfigError(f"hydra.sweeper.storage={redact_text(url)} cannot be opened: {reason}") from None


def load_study(name: str, url: str, pruner: dict[str, Any] | None) -> optuna.Study:
    """The sweep's study in another process (a trial worker, a DDP job's process) with the sweep's pruner:
    a loaded study would otherwise decide with Optuna's default pruner."""
    return optuna.load_study(study_name=name, storage=storage(url), pruner=make("pruner", pruner, Space()))


def make(kind: str, node: dict[str, Any] | None, space: Space) -> Any:
    """The sampler or pruner from its config; a grid sampler gets the search space's choices."""
    if not node:
        return None
    node = dict(node)
    try:
        if str(node.get("_target_", "")).endswith("GridSampler"):
            grid = {}
            for key, dist in space.distributions.items():
                if not isinstance(dist, CategoricalDistribution):
                    raise ConfigError(f"hydra/sweeper/sampler=grid needs choice(...) or range(...) for {key}")
                grid[key] = list(dist.choices)
            node["search_space"] = grid
        return instantiate(node)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra wraps the sampler's own errors
        raise ConfigError(f"hydra.sweeper.{kind}: {str(err).splitlines()[0]}") from None


def open_study(
    settings: dict[str, Any], space: Space, name: str, direction: str, sampler: Any, pruner: Any
) -> optuna.Study:
    """Create or load the study (one process at a time: see sweeps/shared.py), and fail (and re-queue) the
    trials that a dead process left RUNNING."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(settings)
    heartbeat = settings.get("heartbeat_interval") if "://" in url else None
    grace = settings.get("grace_period") if heartbeat else None
    for key, value in (("heartbeat_interval", heartbeat), ("grace_period", grace)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"hydra.sweeper.{key}={value} must be a whole number of seconds >= 1")
    if heartbeat and grace and grace <= heartbeat:
        raise ConfigError(
            f"hydra.sweeper.grace_period={grace} must be longer than heartbeat_interval={heartbeat}"
        )
    try:
        with shared.lock(url):
            study = optuna.create_study(
                study_name=name,
                storage=storage(url, heartbeat and int(heartbeat), grace and int(grace)),
                direction="maximize" if direction == "max" else "minimize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - the lock's connection: drivers raise many kinds
        reason = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
        raise ConfigError(f"hydra.sweeper.storage={redact_text(url)} cannot be opened: {reason}") from None
    with shared.lock(url, f"study:{name}"):
        shared.recover_stale(study)
    if "://" in url:
        # Workers started with the same seed would sample the same first parameters: each gets its own
        # stream (Optuna does the same for its own parallel workers).
        study.sampler.reseed_rng()
    return study


def storage_url(settings: dict[str, Any]) -> str:
    return str(settings.get("storage") or DEFAULT_STORAGE)


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
