"""sweeplab's sweeper: plans the jobs of a multirun, checks them all, runs them, and reports.

This module holds what a grid and a search share; ``entry`` picks one (``grid`` or ``optuna_loop``).
Why this sweeper, not Hydra's BasicSweeper: it stops the whole sweep at the first failed job and returns no
summary; ours checks every job's config before the first one trains, keeps going past a failed job
(recording why it failed), records the sweep in MLflow and ends with a leaderboard. (Hydra's Optuna
sweeper pins optuna<3, without pruning or resume.)
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweeps.launch import submitit
from sweeps.launch.job import JobRunner
from sweeps.outcome import Outcome, State
from sweeps.support import invocation, renames, startup_gc
from sweeps.support.errors import ConfigError, TrackingError, TrainingError
from sweeps.support.secrets import redact, redact_override
from sweeps.sweeper.composed import ComposedOnce
from sweeps.sweeper.settings import SweeplabSettings
from sweeps.tracking import leaderboard
from sweeps.tracking import session as tracking
from sweeps.training.keys import check_additions

Imported = Callable[[tracking.Session | None], None]  # told once torch is imported (``Sweep.check``)

log = logging.getLogger("sweeplab")


class Sweep:
    def __init__(
        self,
        settings: SweeplabSettings,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.settings = settings
        # each job's config composed once per set of group choices: for the checks, the workers and the
        # in-process launcher (a launcher that pickles itself for other processes keeps Hydra's loader)
        self.loader = ComposedOnce(hydra_context.config_loader)
        self.hydra_context = hydra_context
        self.config = config
        renames.say(config.hydra.runtime.choices)  # once per sweep, not once per job
        invocation.remember()  # the command as typed, for the processes the sweep starts
        # Hydra's basic launcher runs jobs in this process: through ``runner``, which gives each job its
        # context. Any other launcher pickles the task function for a process of its own (``submitit``).
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        self.in_process = target.endswith(".BasicLauncher")
        # several trials at once in this machine: in worker processes (``launch.workers``)
        self.in_workers = settings.n_jobs > 1 and self.in_process
        self.runner = JobRunner(task_function)
        # sweeplab's app (``sweeps.run``: its task function carries a mark), whose jobs are checked
        # before any trains; another app's config is that app's business, whatever keys it has.
        self.ours = self.runner.ours
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=(
                HydraContext(config_loader=self.loader, callbacks=hydra_context.callbacks)
                if self.in_process
                else hydra_context
            ),
            task_function=self.runner if self.in_process else task_function,
            config=config,
        )

    def parser(self) -> OverridesParser:
        return OverridesParser.create(config_loader=self.hydra_context.config_loader)

    def plan(self, arguments: list[str]) -> list[list[str]]:
        """Expand comma lists and ``range``/``choice`` into the grid of jobs (one override list each)."""
        axes: dict[str, list[str]] = {}  # by key: a key given twice takes its last value, as in Hydra
        for override in self.parser().parse_overrides(arguments):
            key = override.get_key_element()
            if not override.is_sweep_override():
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                raise HydraException(f"{override.input_line}: a grid needs a list of values")
        return [list(job) for job in itertools.product(*axes.values())]

    def job_config(self, overrides: list[str]) -> DictConfig:
        return self.loader.load_sweep_config(self.config, list(overrides))

    def check(
        self,
        jobs: list[list[str]],
        tracker: tracking.Session | None = None,
        first: DictConfig | None = None,
        imported: Imported | None = None,
    ) -> tuple[str, str]:
        """Every job's config, checked before any trains (raises ConfigError naming the job); ``first``: the
        first job's config, composed already. ``imported(tracker)`` runs once torch is imported, before any
        torch op (where trial workers are forked).

        Returns the objective (metric, mode) of the first job.
        """
        from sweeps.training.build import validate  # torch loads here

        startup_gc.resume()  # imports done: the check builds data with the collector back on
        if imported is not None:
            imported(tracker)

        cache: dict[str, Any] = {}
        objectives = []
        for i, overrides in enumerate(jobs):
            cfg = first if i == 0 and first is not None else self.job_config(overrides)
            try:
                objectives.append(validate(cfg, cache, tracker, overrides))
            except ConfigError as err:
                where = f" (job {' '.join(redact_override(o) for o in overrides)})" if len(jobs) > 1 else ""
                raise ConfigError(f"{err}{where}") from err
        return objectives[0] if objectives else ("objective", "max")

    def start(
        self,
        jobs: list[list[str]],
        prepare: Callable[[tuple[str, str]], Any] | None = None,
        parent: Callable[..., Any] | None = None,
        shared: bool = True,
        imported: Imported | None = None,
    ) -> tuple[tracking.Session | None, Any, Path]:
        """Open the store (in the background) while every job is checked; then the sweep folder, parent run.

        Bad input of any kind exits here with one line and code 2, before anything is created.
        ``parent(session, prepared, start)``, if given, joins another process's parent run or calls
        ``start()`` to create one (``shared`` by several processes: a study shared by workers).
        ``imported``: see ``check``.
        """
        session, prepared = self.open(jobs, prepare, imported)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        config = redact(OmegaConf.to_container(self.config, resolve=False))
        (sweep_dir / "multirun.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        if session:
            name = f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"
            if parent:
                parent(session, prepared, lambda: session.start_sweep(name, sweep_dir, shared=shared))
            else:
                session.start_sweep(name, sweep_dir)
            submitit.publish(self.config, sweep_id=session.sweep_id)  # for jobs run elsewhere (submitit)
        self.runner.tracker = session
        return session, prepared, sweep_dir

    def open(
        self,
        jobs: list[list[str]],
        prepare: Callable[[tuple[str, str]], Any] | None,
        imported: Imported | None = None,
    ) -> tuple[tracking.Session | None, Any]:
        """The tracking session and ``prepare(objective)``, or one line and exit code 2 for bad input (1 if
        the tracking process died meanwhile)."""
        session = None
        try:
            first = self.job_config(jobs[0]) if self.ours and jobs else None
            if first is not None:  # a key nothing reads (+trainer.max_epoch=5): before the store opens
                check_additions(jobs[0], first, self.config.hydra.runtime.choices)
            session = (
                tracking.start(self.config.tracking, serves_workers=self.in_workers) if self.ours else None
            )
            if session:
                session.warm_pictures()  # once its store is open, while this process checks the configs
            validate = self.ours and self.settings.validate_all
            objective = (
                self.check(jobs, session, first, imported)
                if validate
                else ("objective", self.settings.mode())
            )
            prepared = prepare(objective) if prepare else None
            if session:
                session.ready()
        except (ConfigError, TrackingError) as err:
            if session:
                session.close()
            refuse(err)
        return session, prepared


def refuse(err: ConfigError | TrackingError | TrainingError) -> NoReturn:
    """One line and the error's exit code: 2 for bad input of a sweep, 1 for its tracking failing or what a
    range test found; no traceback."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(err.exit_code) from None


def finish(session: tracking.Session | None, status: str) -> None:
    """Close the sweep's parent run (if this process has one) and the tracking process; a write the store
    refused for want of space is raised as the full disk it is (``entry`` says so in one line)."""
    try:
        if session and session.parent:
            session.end_run(session.parent, status)
    finally:
        full = session.close() if session else None
    if full and session:
        store = session.shown_uri.split("///", 1)[-1] if session.shown_uri.startswith("sqlite") else None
        raise OSError(errno.ENOSPC, f"the tracking store refused a write: {full}", store)


def job_outcome(ret: JobReturn) -> Outcome:
    """A job's outcome from Hydra's ``JobReturn``: what the task returned, or the error it raised (Hydra's
    ``return_value`` re-raises that one). Another app's task may return any number."""
    try:
        # A failed job's ``return_value`` first writes "Error executing job with overrides: ..." to stderr,
        # beside the line the sweep says about the failed trial itself (and a full disk's one line).
        quiet = ret.status is JobStatus.FAILED
        with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
            value = ret.return_value
    except Exception as err:  # noqa: BLE001 - the job's own error, whatever it is
        return Outcome.of_error(err)
    if isinstance(value, Outcome):
        return value
    try:
        return Outcome(State.FINISHED, float(value))
    except (TypeError, ValueError):
        return Outcome(State.FINISHED)


def objective_of(outcomes: list[Outcome]) -> tuple[str, str]:
    """The objective's name and direction, from the last job that finished."""
    finished = [o for o in outcomes if o.state is State.FINISHED]
    return (finished[-1].metric, finished[-1].mode) if finished else ("objective", "max")


def grid_rows(
    jobs: list[list[str]], outcomes: list[Outcome], session: tracking.Session | None
) -> list[leaderboard.Row]:
    """One leaderboard row per job, showing the keys the grid varies, with MLflow run ids."""
    swept = _swept_keys(jobs)
    rows = []
    for i, (overrides, outcome) in enumerate(zip(jobs, outcomes, strict=True)):
        pairs = dict(o.split("=", 1) for o in overrides if "=" in o)
        shown = {
            k.lstrip("+~"): redact_override(f"{k}={v}").split("=", 1)[1]
            for k, v in pairs.items()
            if k in swept
        }
        rows.append(leaderboard.Row.of(i, shown, outcome))
    if session:
        session.fill_run_ids(rows)
    return rows


def _swept_keys(jobs: list[list[str]]) -> set[str]:
    """Keys whose value differs between jobs (all keys for a single job)."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for o in overrides:
            if "=" in o:
                k, v = o.split("=", 1)
                values.setdefault(k, set()).add(v)
    return {k for k, v in values.items() if len(v) > 1 or len(jobs) == 1}
