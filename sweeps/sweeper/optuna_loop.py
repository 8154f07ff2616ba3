"""The sweeper's Optuna mode: ask a trial, run it, tell the outcome, until the study holds ``n_trials``
finished trials, the ``timeout`` passes, the next trial would not end before the ``deadline``, or the failure
budget is spent. Then the leaderboard of the whole study and its best trial."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from sweeps.launch import gpus, scheduler, submitit
from sweeps.launch.workers import Workers
from sweeps.search import coordination
from sweeps.search.retry import DatabaseAway
from sweeps.search.space import Space, parse_space, probes, study_name
from sweeps.search.study import ENDED, FINISHED, StudyRef, continue_seeded, make, open_study
from sweeps.support import invocation
from sweeps.support.errors import ConfigError, TrainingError
from sweeps.support.interrupt import Interrupted
from sweeps.support.secrets import redact_text
from sweeps.sweeper import lr_auto, trials
from sweeps.sweeper.base import Sweep, finish, refuse
from sweeps.sweeper.ledger import Ledger
from sweeps.sweeper.report import report
from sweeps.sweeper.results import best, study_rows
from sweeps.tracking.session import Session

log = logging.getLogger("sweeplab")


@dataclass
class Search:
    """One run of a search in this process: what it searches and where it records."""

    sweep: Sweep
    space: Space
    name: str
    devices: list[str | None]
    ref: StudyRef | None = None
    session: Session | None = None
    metric: str = "objective"
    mode: str = "max"
    lr_auto: bool = False  # ``lr=auto``: each optimizer's lr range comes from its range test (``lr_auto``)

    @property
    def shared(self) -> bool:
        """A database: workers anywhere may share the study and one parent run."""
        return "://" in self.sweep.settings.storage_url


def plan(sweep: Sweep, arguments: list[str]) -> Search:
    """The space, the study's name and each worker's GPUs; bad input exits with one line and code 2."""
    settings = sweep.settings
    try:
        space = parse_space(sweep.parser(), arguments, settings.params)
        settings.check_search()
        trainer = sweep.config.get("trainer") or {}
        # GPUs of this machine, for trials run here; a scheduler's jobs get theirs from the scheduler.
        here = sweep.in_process
        devices = gpus.for_workers(settings.n_jobs if here else 1, trainer, settings.trials_per_gpu)
    except ConfigError as err:
        refuse(err)
    name = settings.study_name or study_name(space)  # with lr=auto in it: the same command, the same study
    return Search(sweep, space, name, devices, lr_auto=lr_auto.take(space))


def start(search: Search, workers: Workers | None = None) -> Path:
    """Open the study (checking every probe config meanwhile), the parent run; returns the sweep folder.
    ``workers`` waiting to be forked are forked once the check has imported torch."""
    settings = search.sweep.settings

    def prepare(objective: tuple[str, str]) -> tuple[StudyRef, str, str]:
        metric, mode = objective
        sampler = make("sampler", settings.sampler, search.space)
        pruner = make("pruner", settings.pruner, search.space)
        beat = (settings.heartbeat_interval, settings.grace_period)
        ref = open_study(
            settings.storage_url, search.name, mode, sampler, pruner, beat, settings.storage_retry_seconds
        )
        with coordination.lock(ref.url, f"study:{ref.name}"):
            coordination.recover_stale(ref)  # trials a dead process left RUNNING: failed, queued again
            continue_seeded(ref, settings.sampler, search.space)  # no repeats of an earlier command's points
        return ref, metric, mode

    def parent(session: Session, prepared: tuple, begin: Any) -> None:
        coordination.join_or_start(prepared[0], session, begin)

    chosen = parent if search.shared else None

    def fork(session: Session | None) -> None:
        assert workers is not None  # (not holding the sweep's socket to its tracking process)
        workers.fork(keep_out=session.pipe_fds() if session else [])

    session, prepared, sweep_dir = search.sweep.start(
        probes(search.space), prepare, chosen, imported=fork if workers else None
    )
    search.session = session
    search.ref, search.metric, search.mode = prepared
    # Shown by optuna-dashboard and ``optuna studies`` beside the name: the command that runs (resumes) it.
    search.ref.study.set_user_attr("sweeplab.command", invocation.command(multirun=True))
    if session:
        session.warm_pictures(search.ref.url)  # drawn after the last trial: imports and reads now
        shown = redact_text(settings.storage_url)
        session.log(session.sweep_run, tags={"sweeplab.study": search.name, "sweeplab.storage": shown})
    return sweep_dir


def ledger_for(search: Search) -> Ledger:
    assert search.ref is not None
    ledger = Ledger(search.ref, search.sweep.settings, search.metric)
    ledger.complete = search.space.suggest_rest
    session = search.session
    if session:
        ledger.on_stale = lambda numbers: session.kill_trial_runs(search.name, [str(n) for n in numbers])
    if session and search.shared:
        # A machine may die with tracking writes in flight: a trial is told to Optuna only once its MLflow
        # run is closed, so that a finished trial never has a run left RUNNING.
        ledger.sync_runs = session.run_ids
    return ledger


def early_workers(search: Search) -> Workers | None:
    """Worker processes for ``n_jobs`` > 1 in this machine: forked once the config check has imported torch
    (``start``), or else started as fresh interpreters (see ``launch.workers``)."""
    sweep, settings = search.sweep, search.sweep.settings
    if sweep.in_workers:
        return Workers(settings.n_jobs, search.devices, forked=True)
    return None


def executor(search: Search, ledger: Ledger, workers: Workers | None) -> trials.Executor:
    """Where this process's trials run: the workers ``early_workers`` started, the launcher, or here."""
    sweep, settings = search.sweep, search.sweep.settings
    if workers is None:
        if scheduler.is_submitit(sweep.launcher):  # Slurm (or submitit's local) jobs, n_jobs in flight
            return trials.AsJobs(sweep, search.space, ledger, settings.n_jobs)
        if settings.n_jobs > 1:
            return trials.ThroughLauncher(sweep, search.space, settings.n_jobs)
        return trials.InProcess(sweep, search.space, ledger)
    session = search.session
    setup = {
        "tracking": OmegaConf.to_container(sweep.config.tracking, resolve=True),
        "sweep_id": session.sweep_id if session else None,
        "study": search.name,
        "storage": settings.storage_url,
        "pruner": settings.pruner,
        "verbose": bool(sweep.config.get("verbose", False)),
    }
    return trials.InWorkers(sweep, search.space, workers, setup, session)


def run_search(sweep: Sweep, arguments: list[str]) -> list[list[JobReturn]]:
    """The search; a database that stays away stops it with one line (``search.retry``)."""
    try:
        return _run_search(sweep, arguments)
    except DatabaseAway as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def _run_search(sweep: Sweep, arguments: list[str]) -> list[list[JobReturn]]:
    search = plan(sweep, arguments)
    workers = early_workers(search)
    try:
        sweep_dir = start(search, workers)
    except BaseException:
        if workers:
            workers.abandon()
        raise
    ref, session, settings = search.ref, search.session, sweep.settings
    assert ref is not None
    # an earlier command's trials, interrupted ones too: a resumed study's leaderboard shows them
    earlier = ref.trials(ENDED)
    already = sum(t.state in FINISHED for t in earlier)
    log.info(
        "search: study %s (%s, %s), %d of %d trials finished before -> %s",
        *(ref.name, type(ref.study.sampler).__name__, type(ref.study.pruner).__name__),
        *(already, settings.n_trials, sweep_dir),
    )
    ledger = ledger_for(search)
    sweep.runner.deadline = settings.deadline  # each trial stops there (``StopAtDeadline``)
    submitit.publish(sweep.config, study=search.name)  # for trials run elsewhere (submitit)
    closing = True  # whether this process reports on and closes the parent run
    status = "KILLED"
    results: list[JobReturn] = []
    try:
        if search.lr_auto:
            status = "FAILED"  # a range test that finds no lr refuses the search
            auto_lr(search)
            status = "KILLED"
        results = trials.run(ledger, search.space, executor(search, ledger, workers))
        record_stop(search, ledger)
        closing = _report(search, ledger, sweep_dir, resumed=bool(earlier))
        status = "FINISHED"
    except Interrupted as err:
        err.kept = (
            f"{ref.finished()} finished trials of study {ref.name} are kept, the interrupted ones queued "
            "again; run the same command to resume"
        )
        raise
    finally:
        if workers and workers.setup is None:  # they never took a trial (lr=auto refused, ...)
            workers.abandon()
        elif workers:
            workers.reap()  # ``close`` let them go: they ended while the search reported
        if status != "FINISHED" and search.shared and session:
            closing = _last_out_quietly(ref, session)
        if closing:
            finish(session, status)
        elif session:
            session.close()
    if ledger.gave_up:
        print(f"error: {ledger.gave_up}", file=sys.stderr)
        raise SystemExit(ledger.exit_code)
    return [results]


def _report(search: Search, ledger: Ledger, sweep_dir: Path, resumed: bool) -> bool:
    """The leaderboard and the best trial, shown on the parent run by the process that closes it (the last
    worker out of a shared study); whether this process is that one."""
    ref, session = search.ref, search.session
    assert ref is not None
    closing = True
    rows = ledger.rows
    if session:
        session.fill_run_ids(rows)
    if search.shared and session:
        closing = coordination.last_out(ref, session)
    if (resumed and not search.shared) or (search.shared and session and closing):
        # a resumed study, or the last worker out: the whole study, with the runs of the other trials
        # (the earlier commands', the other workers')
        rows = study_rows(ref, ledger.rows, session.trial_runs(ref.name) if session else {})
    shown = session if closing else None
    report(rows, search.metric, search.mode, sweep_dir, shown, ledger.stop_reason)
    best(ref, search.space, search.metric, sweep_dir, shown)
    return closing


def auto_lr(search: Search) -> None:
    """``lr=auto``: each optimizer's lr range, on the space, the parent run and in the log."""
    assert search.ref is not None
    try:
        found = lr_auto.apply(search.sweep, search.space, search.ref)
    except (ConfigError, TrainingError) as err:  # bad input in a range test's config; or no lr found
        refuse(err)
    if search.session:
        shown = ", ".join(f"{name}: {lr:.3g}" for name, lr in found.items())
        search.session.log(search.session.sweep_run, tags={"sweeplab.lr_auto": shown})


def record_stop(search: Search, ledger: Ledger) -> None:
    """Why this process started no further trial: in the summary, on the study and on the parent run."""
    why = ledger.stop_reason or "no trial left to run"
    log.info("search: stopped: %s", why)
    assert search.ref is not None
    search.ref.study.set_user_attr("sweeplab.stop_reason", why)
    if search.session:
        search.session.log(search.session.sweep_run, tags={"sweeplab.stop_reason": why})


def _last_out_quietly(ref: StudyRef, session: Session) -> bool:
    try:
        return coordination.last_out(ref, session)
    except Exception:  # noqa: BLE001 - going down already: leave the parent to the other workers
        return False
