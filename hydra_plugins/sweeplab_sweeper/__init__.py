"""Hydra's entry point for sweeplab's sweeper.

Hydra only accepts sweeper classes from the ``hydra_plugins`` namespace and imports every module here at
start-up, so this class stays thin and light: the logic, and the heavy imports, live in ``sweeps.sweeper``.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SweeplabSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.impl: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from sweeps.sweeper import Sweep

        self.impl = Sweep(
            self.settings, hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)


# For Hydra apps outside this repo (and Hydra's own sweeper test suites): hydra/sweeper=sweeplab_standalone,
# conf/hydra/sweeper/sweeplab.yaml without its sampler and pruner groups. (Named apart from that YAML, which
# Hydra would otherwise validate against it, with a deprecation warning at every start.)
ConfigStore.instance().store(
    group="hydra/sweeper",
    name="sweeplab_standalone",
    node={
        "_target_": "hydra_plugins.sweeplab_sweeper.SweeplabSweeper",
        "_recursive_": False,
        "validate_all": True,
        "params": None,
        "n_trials": 20,
        "n_jobs": 1,
        "trials_per_gpu": 1,
        "timeout": None,
        "deadline": None,
        "storage": None,
        "study_name": None,
        "max_failures": None,
        "fail_fast": False,
        "heartbeat_interval": 10,
        "grace_period": 60,
        "sampler": {"_target_": "optuna.samplers.TPESampler", "seed": None},
        "pruner": {"_target_": "optuna.pruners.MedianPruner"},
    },
    provider="sweeplab",
)
