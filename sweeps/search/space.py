"""The search space: Hydra's sweep syntax (``interval``, ``choice``, ``range``, ``tag(log, ...)``) as Optuna
distributions, plus the fixed overrides every trial gets."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.support.errors import ConfigError
from sweeps.support.secrets import redact_override

NAME_LENGTH = 60  # of a study name's readable part (a hash follows)


@dataclass
class Space:
    """What each trial overrides: sampled parameters and fixed values."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    # ``lr=auto``: the lr range of each optimizer (from its range test), sampled once the optimizer is known
    lr_by_optimizer: dict[str, FloatDistribution] = field(default_factory=dict)

    def suggest_rest(self, trial: Any) -> None:
        """Sample what depends on the trial's other parameters: the lr range of its optimizer."""
        if not self.lr_by_optimizer:
            return
        ranges = self.lr_by_optimizer
        chosen = trial.params.get("optimizer")
        dist = ranges[chosen] if chosen in ranges else next(iter(ranges.values()))
        trial.suggest_float("lr", dist.low, dist.high, log=True)

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
    if not space.distributions and "lr=auto" not in space.fixed:  # lr=auto: the sweeper adds lr's range
        raise ConfigError(
            "the search has no parameter to search (use interval(...), choice(...) or range(...))"
        )
    return space


def distribution(key: str, sweep: Any) -> BaseDistribution:
    """Hydra's sweep objects as Optuna distributions; a ``log`` tag asks for a log scale."""
    log = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, IntervalSweep):
        low: Any = sweep.start
        high: Any = sweep.end
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
            step = int(sweep.step or 1) if not log else 1
            return IntDistribution(int(values[0]), int(values[-1]), step=step, log=log)
        return CategoricalDistribution(values)
    if isinstance(sweep, ChoiceSweep):
        if not sweep.list:
            raise ConfigError(f"{key}: empty choice()")
        return CategoricalDistribution([str(v) if not isinstance(v, int | float) else v for v in sweep.list])
    raise ConfigError(f"{key}: unsupported search expression")


def _range_values(sweep: RangeSweep) -> Sequence[float]:
    start: Any = sweep.start
    stop: Any = sweep.stop
    step: Any = sweep.step or 1
    count = max(0, math.ceil((stop - start) / step))
    return [start + i * step for i in range(count)]


DISPLAY_ONLY = ("verbose",)  # keys that do not change what a trial trains


def study_name(space: Space) -> str:
    """A name that says what the study searches and is the same for the same search, so that rerunning a
    command resumes its study: the ``search`` preset (else the swept keys), the other fixed overrides (cut
    to stay short; secrets masked), and a hash of the whole space, which keeps different spaces apart.
    What only changes what the command prints (``verbose``, ``-v``) is not part of it."""
    fixed = [o for o in space.fixed if o.split("=", 1)[0].lstrip("+~") not in DISPLAY_ONLY]
    key = repr((sorted((k, repr(d)) for k, d in space.distributions.items()), sorted(fixed)))
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    presets = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") == "search"]
    what = presets[-1].split("=", 1)[1] if presets else "+".join(space.distributions)
    others = [redact_override(o) for o in fixed if o not in presets]
    label = " ".join([what, *others]).translate({ord(c): None for c in "'\\\""})
    if len(label) > NAME_LENGTH:
        label = label[: NAME_LENGTH - 3].rstrip() + "..."
    return f"{label} {digest}"


def probes(space: Space) -> list[list[str]]:
    """Configs to check before the first trial: each parameter at its bounds (or each choice)."""

    def corners(dist: Any) -> list[Any]:
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        return [dist.low, dist.high]

    base = {k: corners(d)[0] for k, d in space.distributions.items()}
    jobs = [space.overrides(base)]
    for key, dist in space.distributions.items():
        for value in corners(dist)[1:]:
            jobs.append(space.overrides({**base, key: value}))
    return jobs
