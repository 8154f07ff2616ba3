"""The search's one ask -> run -> tell loop (``run``), and the executors it runs trials with: in this
process through Hydra's launcher, in batches through a launcher that runs them elsewhere (submitit, Slurm),
or in a pool of worker processes (``n_jobs`` > 1). An executor only starts trials and hands back their
outcomes; asking, telling and stopping are the loop's (and the ``Ledger``'s)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import optuna
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf, open_dict

from sweeps.launch import submitit
from sweeps.launch.scheduler import Jobs
from sweeps.launch.workers import Workers
from sweeps.outcome import Outcome, State
from sweeps.search.space import Space
from sweeps.support import startup_gc
from sweeps.support.interrupt import Interrupted
from sweeps.sweeper.base import Sweep, job_outcome
from sweeps.sweeper.ledger import Ledger
from sweeps.tracking.session import Session, run_name
from sweeps.training.context import JobContext, TrialHandle

log = logging.getLogger("sweeplab")
Done = tuple[int, Outcome, JobReturn | None]  # a trial's number, its outcome, Hydra's return if any


class Executor(Protocol):
    slots: int  # how many trials may run at once

    def submit(self, trial: optuna.Trial) -> None: ...

    def wait(self) -> list[Done]:
        """Block until at least one submitted trial has ended; those that have."""
        ...

    def close(self) -> None: ...


def run(ledger: Ledger, space: Space, executor: Executor) -> list[JobReturn]:
    """Ask for trials while the ledger allows and the executor has room, run them, tell each outcome as it
    comes. Interrupted, the executor stops the trials still running first (their MLflow runs closed KILLED),
    then they are failed and queued again for the next run."""
    startup_gc.resume()  # (if no config check did): collect what the trials leave behind
    running: dict[int, tuple[optuna.Trial, float]] = {}
    results: list[JobReturn] = []
    try:
        while True:
            while len(running) < executor.slots and ledger.may_start(len(running)):
                trial = ledger.next_trial(space.distributions, wait=not running)
                if trial is None:
                    break
                executor.submit(trial)
                running[trial.number] = (trial, time.monotonic())
            if not running:
                break
            for number, outcome, ret in executor.wait():
                trial, began = running.pop(number)
                if ledger.sync_runs and outcome.run_id:
                    ledger.sync_runs([outcome.run_id])  # its MLflow run is closed before Optuna hears of it
                ledger.settle(trial, outcome, began)
                if ret is not None:
                    results.append(ret)
    except BaseException as err:
        try:
            executor.close()
        finally:
            why = str(err) if isinstance(err, Interrupted) else ""  # "interrupted by the user (SIGINT)"
            _abandon(ledger, [trial for trial, _ in running.values()], why)
        raise
    executor.close()
    return results


def _abandon(ledger: Ledger, trials: list[optuna.Trial], why: str) -> None:
    """Interrupted: the running trials failed and queued again (the next run of this command retries them);
    a storage that cannot say so leaves them to the stale-trial recovery of the next run."""
    try:
        ledger.abandon(trials, why)
    except Exception as err:  # noqa: BLE001 - going down already: the original error is the one to show
        log.warning("search: could not queue the interrupted trials again: %s", err)


class InProcess:
    """One trial at a time, in this process, through Hydra's launcher (its task function is the sweep's
    ``JobRunner``, which hands the trial to the job)."""

    slots = 1

    def __init__(self, sweep: Sweep, space: Space, ledger: Ledger) -> None:
        self.sweep, self.space, self.ledger = sweep, space, ledger
        self.pending: optuna.Trial | None = None

    def submit(self, trial: optuna.Trial) -> None:
        self.pending = trial

    def wait(self) -> list[Done]:
        trial, self.pending = self.pending, None
        assert trial is not None
        settings, runner = self.sweep.settings, self.sweep.runner
        runner.trial = TrialHandle(trial, self.ledger.ref.name, settings.storage_url, settings.pruner)
        try:
            ret = self.sweep.launcher.launch(
                [self.space.overrides(trial.params)], initial_job_idx=trial.number
            )[0]
        finally:
            runner.trial = None
        return [(trial.number, job_outcome(ret), ret)]

    def close(self) -> None:
        pass


class ThroughLauncher:
    """Batches of ``slots`` trials through a launcher that runs them elsewhere (``hydra/launcher=
    submitit_local`` or ``slurm``: local processes or Slurm jobs). Hydra's launcher API returns when the
    whole batch is done. Each job is told its trial number and writes to the trial's folder (the numbers in
    a batch need not follow each other when workers share the study)."""

    def __init__(self, sweep: Sweep, space: Space, slots: int) -> None:
        self.sweep, self.space, self.slots = sweep, space, slots
        self.batch: list[optuna.Trial] = []

    def submit(self, trial: optuna.Trial) -> None:
        self.batch.append(trial)

    def wait(self) -> list[Done]:
        batch, self.batch = self.batch, []
        jobs = [
            [
                *self.space.overrides(t.params),
                submitit.override("trial", t.number),
                f"hydra.sweep.subdir={t.number}",
            ]
            for t in batch
        ]
        returns = self.sweep.launcher.launch(jobs, initial_job_idx=batch[0].number)
        return [(t.number, job_outcome(ret), ret) for t, ret in zip(batch, returns, strict=True)]

    def close(self) -> None:
        pass


class AsJobs:
    """A scheduler job per trial (``hydra/launcher=slurm``, ``submitit_slurm``, ``submitit_local``), up to
    ``slots`` in flight, the next one asked as soon as one ends: no batch barrier (``launch.scheduler``).
    A job that ended without a result (cancelled, its node lost) is KILLED: its MLflow run is closed if it
    was left RUNNING, and the ledger fails the trial and queues its parameters again."""

    def __init__(self, sweep: Sweep, space: Space, ledger: Ledger, slots: int) -> None:
        self.sweep, self.space, self.ledger, self.slots = sweep, space, ledger, slots
        self.jobs = Jobs(sweep.launcher, Path(str(sweep.config.hydra.sweep.dir)), self._requeued)

    def submit(self, trial: optuna.Trial) -> None:
        overrides = [
            *self.space.overrides(trial.params),
            submitit.override("trial", trial.number),
            f"hydra.sweep.subdir={trial.number}",  # its folder: the checkpoint a requeued job resumes from
        ]
        self.jobs.submit(trial.number, overrides)

    def wait(self) -> list[Done]:
        done: list[Done] = []
        for ended in self.jobs.wait():
            if ended.ret is not None:
                done.append((ended.key, job_outcome(ended.ret), ended.ret))
                continue
            if self.ledger.on_stale:
                self.ledger.on_stale([ended.key])  # a run its job could not close (a lost node): KILLED
            state = State.KILLED if ended.stopped else State.FAILED
            done.append((ended.key, Outcome(state, reason=ended.why, error="JobEnded"), None))
        return done

    def _requeued(self, number: int, job_id: str) -> None:
        """A trial's job waits to run again: a run its last attempt left RUNNING (its node died under it)
        is closed KILLED as stale; the requeued job runs the trial again (from ``last.ckpt`` if any)."""
        if self.ledger.on_stale:
            self.ledger.on_stale([number])

    def close(self) -> None:
        self.jobs.cancel()


class InWorkers:
    """A trial per worker process at once (``workers``, started while the sweep set up); each gets the
    trial's composed config and its job context as plain data."""

    def __init__(
        self, sweep: Sweep, space: Space, workers: Workers, setup: dict[str, Any], tracker: Session | None
    ) -> None:
        self.sweep, self.space = sweep, space
        self.workers = workers
        workers.begin(setup, tracker)
        self.slots = len(workers.procs)
        self.on: dict[int, int] = {}  # worker -> the trial it runs

    def submit(self, trial: optuna.Trial) -> None:
        worker = self.workers.idle()[0]
        self.workers.submit(worker, self._job(trial))
        self.on[worker] = trial.number

    def wait(self) -> list[Done]:
        return [(self.on.pop(worker), outcome, None) for worker, outcome in self.workers.wait()]

    def close(self) -> None:
        self.workers.close()

    def _job(self, trial: optuna.Trial) -> dict[str, Any]:
        """What a worker needs to run ``trial``: its composed config (without Hydra's part) and context."""
        overrides = self.space.overrides(trial.params)
        job_cfg = self.sweep.job_config(overrides)
        choices = OmegaConf.to_container(job_cfg.hydra.runtime.choices) if "hydra" in job_cfg else {}
        with open_dict(job_cfg):
            del job_cfg["hydra"]
        ctx = JobContext(
            output_dir=Path(self.sweep.config.hydra.sweep.dir) / str(trial.number),
            job=trial.number,
            name=run_name(trial.number, overrides),
            overrides=tuple(overrides),
            choices=choices,  # type: ignore[arg-type]
            deadline=self.sweep.runner.deadline,
        )
        return {**ctx.spec(), "config": OmegaConf.to_container(job_cfg, resolve=True)}
