"""Sweep jobs that train in a process group of their own: DDP trainers.

Lightning's ``ddp`` strategy starts its extra processes by re-running this command's ``sys.argv``; inside a
multirun that re-runs the whole sweep in every extra process. So the sweep runs a DDP job as a single-run
command of its own, ``python -m sweeps.run <the job's overrides>``, in the job's folder, and Lightning
re-executes that. Its first process records the MLflow run as a child of the sweep, reports to the Optuna
trial (its pruning decision is broadcast to the others), and leaves the job's ``Outcome`` in
``result.json`` for the sweep. Every process but the first leaves MLflow and Optuna alone.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

from omegaconf import DictConfig

from sweeps.outcome import RESULT, Outcome, State
from sweeps.support import threads
from sweeps.support.processes import python_path
from sweeps.training.context import JobContext
from sweeps.training.job import resolved, run_job

log = logging.getLogger("sweeplab")
ENV = "SWEEPLAB_TRIAL_OF"  # JSON: what a job's own process needs from its sweep (see ``run``)


def spec() -> dict[str, Any] | None:
    """Set in a job's own processes: which sweep, job and Optuna trial this command belongs to."""
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def first_process() -> bool:
    """Rank 0 of the process group (Lightning sets these variables in the processes it starts)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def run(ctx: JobContext, ranks: int = 1) -> Outcome:
    """Train one job of this sweep in its own process group of ``ranks`` processes on this machine, each with
    its share of this process's cores (``support.threads``); its outcome (FAILED where its processes died
    before reporting one)."""
    output_dir = ctx.output_dir
    assert output_dir is not None  # a sweep's job has its folder
    output_dir.mkdir(parents=True, exist_ok=True)
    result_file = output_dir / RESULT
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "sweeps.run", *config_dirs(), *ctx.overrides]
    command.append(f'hydra.run.dir="{output_dir}"')
    env = {
        **os.environ,
        **threads.environment(ranks),
        ENV: json.dumps(ctx.spec()),
        "PYTHONPATH": python_path(),
    }
    log.info(
        "%straining in its own process group (DDP): %s", ctx.prefix, threads.describe(ranks, "processes")
    )
    code = subprocess.run(command, env=env, check=False).returncode
    if not result_file.exists():
        reason = f"TrialFailed: the trial's processes died (exit code {code}) before reporting a result"
        return Outcome(State.FAILED, reason=reason)
    return Outcome.load(output_dir)


def config_dirs() -> list[str]:
    """This command's ``--config-dir`` (a user's own conf/), for the job's own command."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    sources = HydraConfig.get().runtime.config_sources
    dirs = [s.path for s in sources if s.provider == "command-line" and s.schema == "file"]
    return [arg for path in dirs for arg in ("--config-dir", os.path.abspath(path))]


def run_rank(cfg: DictConfig, job_spec: dict[str, Any]) -> int:
    """The job's own command, in each of its processes; returns the exit code.

    Finished, pruned and deadline-stopped runs exit 0 in every process: Lightning's launcher kills the whole
    group as soon as one of its processes exits otherwise.
    """
    threads.apply()
    first = first_process()
    ctx = JobContext.attach(job_spec, cfg.tracking if first else None, first_rank=first)
    try:
        outcome = resolved(run_job(cfg, ctx), ctx.tracker)
    finally:
        if ctx.tracker is not None:
            ctx.tracker.close()
    if first and ctx.output_dir is not None:
        outcome.save(ctx.output_dir)
    return 1 if outcome.state is State.FAILED else 0


def ranks(trainer: Any) -> int:
    """How many processes a DDP trainer config starts on this machine (``devices``: a count or a list)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, int):
        return max(1, devices)
    if isinstance(devices, str):  # "2", or "auto" and "-1": as many as there are; the cores are not split
        return max(1, int(devices)) if devices.isdigit() else 1
    try:
        return max(1, len(devices))
    except TypeError:
        return 1
