"""Hydra's entry point for sweeplab's sweeper.

Hydra only accepts sweeper classes from the ``hydra_plugins`` namespace and imports every module here at
start-up, so this class stays thin and light: the logic, and the heavy imports, live in ``sweeps.sweeper``.
The settings are a typed structured config (``sweeps.sweeper.settings``), registered here with Hydra.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeps.sweeper.settings import SweeplabSettings, register


class SweeplabSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = SweeplabSettings.of(settings)
        self.impl: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from sweeps.sweeper.base import Sweep

        self.impl = Sweep(
            self.settings, hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from sweeps.sweeper.entry import sweep

        return sweep(self.impl, arguments)


# hydra/sweeper=sweeplab_standalone for Hydra apps outside this repo (and Hydra's own sweeper test suites);
# conf/hydra/sweeper/sweeplab.yaml extends sweeplab_settings. (Named apart from that YAML, which Hydra would
# otherwise match against it, with a deprecation warning at every start.)
register()
