"""sweeplab's sweeper: plans the jobs of a multirun, checks them all, runs them, and reports.

Why our own and not Hydra's BasicSweeper: BasicSweeper stops the whole sweep at the first failed job and
returns no summary; ours checks every job's config before the first one trains, keeps going past a failed
job (recording why it failed) and ends with a leaderboard.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweeps import report
from sweeps.errors import ConfigError

log = logging.getLogger("sweeplab")


class Sweep:
    def __init__(
        self,
        settings: dict[str, Any],
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.settings = settings
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def plan(self, arguments: list[str]) -> list[list[str]]:
        """Expand comma lists and ``range``/``choice`` into the grid of jobs (one override list each)."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(arguments)
        return BasicSweeper.split_arguments(overrides, None)[0]

    def job_config(self, overrides: list[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def check(self, jobs: list[list[str]]) -> None:
        """Every job's config, checked before any trains; bad input exits with one line and code 2."""
        from sweeps.build import validate

        cache: dict[str, Any] = {}
        for overrides in jobs:
            try:
                validate(self.job_config(overrides), cache)
            except ConfigError as err:
                where = f" (job {' '.join(overrides)})" if len(jobs) > 1 else ""
                print(f"error: {err}{where}", file=sys.stderr)
                raise SystemExit(err.exit_code) from None

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        jobs = self.plan(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if self.settings.get("validate_all", True):
            self.check(jobs)
        log.info("sweep: %d runs -> %s", len(jobs), sweep_dir)
        results = list(self.launcher.launch(jobs, initial_job_idx=0))
        self.summarise(jobs, results, sweep_dir)
        return [results]

    def summarise(self, jobs: list[list[str]], results: list[JobReturn], sweep_dir: Path) -> None:
        swept = _swept_keys(jobs)
        rows, metric, mode = [], "objective", "max"
        for i, (overrides, ret) in enumerate(zip(jobs, results, strict=True)):
            pairs = dict(o.split("=", 1) for o in overrides if "=" in o)
            shown = {k.lstrip("+~"): v for k, v in pairs.items() if k in swept}
            if ret.status == JobStatus.COMPLETED:
                value = ret.return_value
                metric, mode = getattr(value, "metric", metric), getattr(value, "mode", mode)
                objective = float(value) if value is not None else math.nan
                rows.append(
                    report.Row(
                        i,
                        shown,
                        "FINISHED",
                        objective,
                        getattr(value, "epochs", 0),
                        getattr(value, "seconds", 0.0),
                    )
                )
            else:
                err = ret._return_value
                rows.append(report.Row(i, shown, "FAILED", reason=f"{type(err).__name__}: {err}"[:200]))
        ranked = report.rank(rows, mode)
        print(f"\n{report.table(ranked, metric)}\n", flush=True)
        report.write_csv(ranked, metric, sweep_dir / "leaderboard.csv")
        (sweep_dir / "leaderboard.md").write_text(report.markdown(ranked, metric))
        failed = sum(r.state == "FAILED" for r in rows)
        if failed:
            log.warning("%d of %d runs failed; errors are in each job's error.txt", failed, len(rows))
        if rows and failed == len(rows):
            raise SystemExit(1)


def _swept_keys(jobs: list[list[str]]) -> set[str]:
    """Keys whose value differs between jobs (all keys for a single job)."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for o in overrides:
            if "=" in o:
                k, v = o.split("=", 1)
                values.setdefault(k, set()).add(v)
    return {k for k, v in values.items() if len(v) > 1 or len(jobs) == 1}
