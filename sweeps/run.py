"""Command line: ``python -m sweeps.run [overrides]`` trains one configuration; add ``-m`` to sweep.

Examples:
    python -m sweeps.run                                   # the default: digits, MLP, cross-entropy, Adam
    python -m sweeps.run -m optimizer=adam,sgd lr=1e-3,1e-2  # a grid, one run per combination

Hydra parses the command line and composes the config; ``sweeps.launch.job`` trains it (a single run, or a
job that the sweeper in ``sweeps.sweeper`` planned); this module only dispatches and exits.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lightning_modules.compat import exit_now
from sweeps.launch.job import task
from sweeps.outcome import Outcome
from sweeps.support.errors import TrackingError
from sweeps.support.secrets import redact_log_records

redact_log_records()  # before Hydra's launcher logs the job overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Outcome:
    try:
        return task(cfg)
    except TrackingError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep's job: its run FAILED with this reason, and the sweep goes on
        print(f"error: {err}", file=sys.stderr)  # a single run: one line, not Hydra's traceback
        raise SystemExit(err.exit_code) from None


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)
