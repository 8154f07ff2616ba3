"""The three ways a search runs its trials: one at a time in this process, batches through a launcher
that runs them elsewhere (submitit), or a pool of worker processes (``n_jobs`` > 1)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf, open_dict

from sweeps.launch import submitit
from sweeps.launch.workers import Workers
from sweeps.search.space import Space
from sweeps.support.context import Trial, set_trial
from sweeps.sweeper.base import Sweep, job_outcome
from sweeps.sweeper.ledger import Ledger
from sweeps.tracking.session import run_name


def in_process(sweep: Sweep, space: Space, ledger: Ledger) -> list[JobReturn]:
    """One trial at a time, in this process, through Hydra's launcher."""
    results: list[JobReturn] = []
    settings = sweep.settings
    while ledger.may_start():
        trial = ledger.next_trial(space.distributions)
        if trial is None:
            break
        set_trial(Trial(trial, ledger.ref.name, settings.storage_url, settings.pruner))
        began = time.monotonic()
        try:
            ret = sweep.launcher.launch([space.overrides(trial.params)], initial_job_idx=trial.number)[0]
        except BaseException:
            ledger.abandon([trial])  # interrupted: the next run of this command retries it
            raise
        finally:
            set_trial(None)
        outcome = job_outcome(ret)
        if ledger.sync_runs and outcome.run_id:
            ledger.sync_runs([outcome.run_id])  # its MLflow run is closed before Optuna hears of it
        ledger.settle(trial, outcome, began)
        results.append(ret)
    return results


def through_launcher(sweep: Sweep, space: Space, ledger: Ledger, n_jobs: int) -> list[JobReturn]:
    """Batches of ``n_jobs`` trials through a launcher that runs them elsewhere (``hydra/launcher=
    submitit_local`` or ``slurm``: local processes or Slurm jobs). Hydra's launcher API returns when the
    whole batch is done, so the next batch starts then. Each job is told its trial number and writes to
    the trial's folder (the numbers in a batch need not follow each other when workers share the study)."""
    results: list[JobReturn] = []
    while ledger.may_start():
        batch: list[optuna.Trial] = []
        while len(batch) < n_jobs and ledger.may_start(len(batch)):
            trial = ledger.next_trial(space.distributions, wait=not batch)
            if trial is None:
                break
            batch.append(trial)
        if not batch:
            break
        jobs = [
            [
                *space.overrides(t.params),
                submitit.override("trial", t.number),
                f"hydra.sweep.subdir={t.number}",
            ]
            for t in batch
        ]
        began = time.monotonic()
        try:
            returns = sweep.launcher.launch(jobs, initial_job_idx=batch[0].number)
        except BaseException:
            ledger.abandon(batch)  # interrupted: the next run of this command retries them
            raise
        for trial, ret in zip(batch, returns, strict=True):
            ledger.settle(trial, job_outcome(ret), began)
            results.append(ret)
    return results


def _job(sweep: Sweep, space: Space, trial: optuna.Trial) -> dict[str, Any]:
    """What a worker needs to run ``trial``: its composed config (without Hydra's part) and names."""
    overrides = space.overrides(trial.params)
    job_cfg = sweep.job_config(overrides)
    choices = OmegaConf.to_container(job_cfg.hydra.runtime.choices) if "hydra" in job_cfg else {}
    with open_dict(job_cfg):
        del job_cfg["hydra"]
    return {
        "number": trial.number,
        "config": OmegaConf.to_container(job_cfg, resolve=True),
        "output_dir": str(Path(sweep.config.hydra.sweep.dir) / str(trial.number)),
        "overrides": overrides,
        "choices": choices,
        "name": run_name(trial.number, overrides),
    }


def in_workers(sweep: Sweep, space: Space, ledger: Ledger, devices: list[str | None], setup: dict) -> None:
    """A trial per worker at once (``devices``: each worker's GPUs); a new one starts as soon as any ends."""
    workers = Workers(len(devices), setup, devices)
    running: dict[int, tuple[optuna.Trial, float]] = {}
    try:
        while True:
            for i in workers.idle():
                if not ledger.may_start(len(running)):
                    break
                trial = ledger.next_trial(space.distributions, wait=not running)
                if trial is None:
                    break
                workers.submit(i, _job(sweep, space, trial))
                running[i] = (trial, time.monotonic())
            if not running:
                return
            for i, outcome in workers.wait():
                trial, began = running.pop(i)
                ledger.settle(trial, outcome, began)
    finally:
        workers.close()
