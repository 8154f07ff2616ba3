"""Command line: ``python -m sweeps.run [overrides]`` trains one configuration; add ``-m`` to sweep.

Examples:
    python -m sweeps.run                                   # the default: digits, MLP, cross-entropy, Adam
    python -m sweeps.run -m optimizer=adam,sgd lr=1e-3,1e-2  # a grid, one run per combination

Hydra parses the command line and composes the config; ``sweeps.launch.job`` trains it (a single run, or a
job that the sweeper in ``sweeps.sweeper`` planned); this module only dispatches and exits.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lightning_modules.compat import exit_now
from sweeps.launch.job import task
from sweeps.outcome import Outcome
from sweeps.support import renames
from sweeps.support.secrets import redact_log_records

redact_log_records()  # before Hydra's launcher logs the job overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Outcome:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.RUN:  # a sweep's jobs do not repeat what its sweeper has said once
        renames.say(hydra_cfg.runtime.choices)
    return task(cfg)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)
