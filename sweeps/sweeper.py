"""sweeplab's sweeper: plans the jobs of a multirun, checks them all, runs them, and reports.

A grid (comma lists) runs here; a search space hands over to ``optuna_sweep``. Why our own and not Hydra's
BasicSweeper: it stops the whole sweep at the first failed job and returns no summary; ours checks every
job's config before the first one trains, keeps going past a failed job (recording why it failed), records
the sweep in MLflow and ends with a leaderboard. (Hydra's Optuna sweeper pins optuna<3, without pruning or
resume.)
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

from sweeps import job_context, report, tracking
from sweeps.errors import ConfigError
from sweeps.secrets import redact, redact_override, redact_text

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

    def check(self, jobs: list[list[str]]) -> tuple[str, str]:
        """Every job's config, checked before any trains (raises ConfigError naming the job).

        Returns the objective (metric, mode) of the first job.
        """
        from sweeps.build import validate

        cache: dict[str, Any] = {}
        objectives = []
        for overrides in jobs:
            try:
                objectives.append(validate(self.job_config(overrides), cache))
            except ConfigError as err:
                where = f" (job {' '.join(redact_override(o) for o in overrides)})" if len(jobs) > 1 else ""
                raise ConfigError(f"{err}{where}") from err
        return objectives[0] if objectives else ("objective", "max")

    def start(
        self, arguments: list[str], jobs: list[list[str]], prepare: Any = None, parent: Any = None
    ) -> tuple[Any, Any, Path]:
        """Open the store (in the background) while every job is checked; then the sweep folder, parent run.

        Bad input of any kind exits here with one line and code 2, before anything is created.
        ``parent(session, prepared, start)``, if given, joins another process's parent run or calls
        ``start()`` to create one shared by several processes (a study shared by workers).
        """
        session = None
        try:
            ours = "data" in self.config and "trainer" in self.config  # sweeplab's config, not another app's
            session = tracking.start(self.config.tracking) if "tracking" in self.config else None
            validate = ours and self.settings.get("validate_all", True)
            objective = self.check(jobs) if validate else ("objective", "max")
            prepared = prepare(objective) if prepare else None
            if session:
                session.ready()
        except ConfigError as err:
            if session:
                session.close()
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        config = redact(OmegaConf.to_container(self.config, resolve=False))
        (sweep_dir / "multirun.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        if session:
            name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
            if parent:
                start = lambda: session.start_sweep(name, arguments, sweep_dir, shared=True)  # noqa: E731
                parent(session, prepared, start)
            else:
                session.start_sweep(name, arguments, sweep_dir)
            job_context.publish(self.config, sweep_id=session.sweep_id)  # for jobs run elsewhere (submitit)
        return session, prepared, sweep_dir

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        params = self.settings.get("params")
        if is_search(arguments, params):
            from sweeps.optuna_sweep import run_search

            return run_search(self, arguments, params)
        jobs = self.plan(arguments)
        session, _, sweep_dir = self.start(arguments, jobs)
        log.info(
            "sweep: %d runs -> %s%s",
            len(jobs),
            sweep_dir,
            f" (MLflow run {session.sweep_id})" if session else "",
        )
        status = "KILLED"
        try:
            results = list(self.launcher.launch(jobs, initial_job_idx=0))
            rows, metric, mode = self.rows(jobs, results, session)
            self.report(rows, metric, mode, sweep_dir, session)
            status = "FINISHED"
        finally:
            self.finish(session, status)
        if rows and all(r.state == "FAILED" for r in rows):
            raise SystemExit(1)
        return [results]

    @staticmethod
    def finish(session: tracking.Session | None, status: str) -> None:
        if session and session.parent:
            session.send("end_run", run=session.parent, status=status)
        if session:
            session.close()

    def rows(
        self, jobs: list[list[str]], results: list[JobReturn], session: tracking.Session | None
    ) -> tuple[list[report.Row], str, str]:
        """One leaderboard row per job, with the objective's name and direction."""
        swept = _swept_keys(jobs)
        rows, metric, mode = [], "objective", "max"
        for i, (overrides, ret) in enumerate(zip(jobs, results, strict=True)):
            pairs = dict(o.split("=", 1) for o in overrides if "=" in o)
            shown = {
                k.lstrip("+~"): redact_override(f"{k}={v}").split("=", 1)[1]
                for k, v in pairs.items()
                if k in swept
            }
            value = job_value(ret)
            if ret.status == JobStatus.COMPLETED:
                metric, mode = getattr(value, "metric", metric), getattr(value, "mode", mode)
                epochs, seconds = getattr(value, "epochs", 0), getattr(value, "seconds", 0.0)
                objective = float(value) if isinstance(value, int | float) else math.nan  # any task's return
                rows.append(report.Row(i, shown, "FINISHED", objective, epochs, seconds))
            else:
                reason = redact_text(f"{type(value).__name__}: {value}".splitlines()[0])[:200]
                rows.append(report.Row(i, shown, "FAILED", reason=reason))
        if session:
            session.fill_run_ids(rows, [run_handle(r) for r in results])
        return rows, metric, mode

    def report(
        self,
        rows: list[report.Row],
        metric: str,
        mode: str,
        sweep_dir: Path,
        session: tracking.Session | None,
    ) -> None:
        """The leaderboard on the console and in the sweep folder, and the summary on the parent run."""
        ranked = report.rank(rows, mode)
        print(f"\n{report.table(ranked, metric)}\n", flush=True)
        report.write_csv(ranked, metric, sweep_dir / "leaderboard.csv")
        (sweep_dir / "leaderboard.md").write_text(report.markdown(ranked, metric))
        failed = sum(r.state == "FAILED" for r in rows)
        if failed:
            log.warning("%d of %d runs failed; errors are in each job's error.txt", failed, len(rows))
        if session and session.parent:
            summary = report.summary(ranked, metric)
            parent = session.parent
            session.send("log", run=parent, metrics=summary["metrics"], tags=summary["tags"])
            for name in ("leaderboard.csv", "leaderboard.md"):
                session.send("artifact", run=parent, path=str(sweep_dir / name))
            if summary["best_overrides"]:
                session.send("text", run=parent, text=summary["best_overrides"], name="best_config.txt")
            if {"loss", "optimizer"} <= set(ranked[0].overrides if ranked else {}):
                session.send(
                    "heatmap", run=parent, rows=[r.__dict__ for r in ranked], metric=metric, mode=mode
                )


def job_value(ret: JobReturn) -> Any:
    """What a job returned, or the exception it raised (Hydra's ``return_value`` re-raises that one)."""
    return ret.return_value if ret.status == JobStatus.COMPLETED else ret._return_value


def run_handle(ret: JobReturn) -> str | None:
    """The tracking handle of a job's MLflow run (set by ``sweeps.run`` on its result or its exception)."""
    return getattr(job_value(ret), "sweeplab_run", None)


def is_search(arguments: list[str], params: Any) -> bool:
    """An Optuna search rather than a grid: a ``params`` space, or an interval on the command line."""
    return bool(params) or any("interval(" in a for a in arguments)


def _swept_keys(jobs: list[list[str]]) -> set[str]:
    """Keys whose value differs between jobs (all keys for a single job)."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for o in overrides:
            if "=" in o:
                k, v = o.split("=", 1)
                values.setdefault(k, set()).add(v)
    return {k for k, v in values.items() if len(v) > 1 or len(jobs) == 1}
