"""``lr=auto`` in a search: the learning-rate range test (``stage=lr_find``) runs once per optimizer of the
search, and each trial samples its lr log-uniformly from one decade either side of its optimizer's
suggestion, instead of a wide range given by hand.

The suggestions are kept on the study (``sweeplab.lr_auto``): a resumed study searches the same ranges and
does not repeat the range tests (a test that found no lr is not kept: the next run tests again). The
study's name keeps ``lr=auto`` itself, so the same command resumes it.
"""

from __future__ import annotations

import json
import logging
import math

from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution

from sweeps.search.space import Space
from sweeps.search.study import StudyRef
from sweeps.support.errors import TrainingError
from sweeps.sweeper.base import Sweep

log = logging.getLogger("sweeplab")
AUTO = "lr=auto"
DECADES = 1.0  # the range: suggestion / 10**DECADES .. suggestion * 10**DECADES


def take(space: Space) -> bool:
    """Whether the search asks for ``lr=auto`` (the override leaves the fixed ones: no trial gets it)."""
    if AUTO not in space.fixed:
        return False
    space.fixed.remove(AUTO)
    return True


def optimizers(sweep: Sweep, space: Space) -> list[str]:
    """The optimizers the search may pick: its ``optimizer`` choice, or the one every trial uses."""
    dist = space.distributions.get("optimizer")
    if isinstance(dist, CategoricalDistribution):
        return [str(c) for c in dist.choices]
    return [str(OmegaConf.select(sweep.job_config(space.fixed), "hydra.runtime.choices.optimizer"))]


def suggestions(sweep: Sweep, space: Space, names: list[str]) -> dict[str, float]:
    """The range test's suggested lr for each optimizer, on the search's fixed configuration."""
    from sweeps.training.fit import prepare
    from sweeps.training.lr_find import range_test

    found = {}
    for name in names:
        cfg = sweep.job_config([*space.fixed, f"optimizer={name}"])
        options = cfg.lr_find
        curve = range_test(
            prepare(cfg, sweep.runner.tracker),
            options.min_lr,
            options.max_lr,
            options.steps,
            options.stop_factor,
        )
        found[name] = curve.suggestion
        log.info("lr=auto: the range test suggests lr %.3g for %s", curve.suggestion, name)
    return found


def apply(sweep: Sweep, space: Space, ref: StudyRef) -> dict[str, float]:
    """Give ``space`` each optimizer's lr range, from the study's stored suggestions or new range tests."""
    stored = ref.study.user_attrs.get("sweeplab.lr_auto")
    kept: dict[str, float] = json.loads(stored) if stored else {}
    found = {name: lr for name, lr in kept.items() if math.isfinite(lr)}  # a test that found none runs again
    missing = [name for name in optimizers(sweep, space) if name not in found]
    if missing:
        found.update(suggestions(sweep, space, missing))
        usable = {name: lr for name, lr in found.items() if math.isfinite(lr)}
        ref.study.set_user_attr("sweeplab.lr_auto", json.dumps(usable))
    unusable = [name for name, lr in found.items() if not math.isfinite(lr)]
    if unusable:  # training found it, not the input: exit 1 as for a run that diverged
        raise TrainingError(
            f"lr=auto: the range test found no lr for {', '.join(unusable)} (its loss diverged at once): "
            "lower lr_find.min_lr, or give lr a range"
        )
    space.lr_by_optimizer = {
        name: FloatDistribution(lr / 10**DECADES, lr * 10**DECADES, log=True) for name, lr in found.items()
    }
    return found
