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
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeps.outcome import Outcome, State
from sweeps.support.context import Trial, current_trial, deadline, set_deadline, set_trial
from sweeps.support.processes import python_path
from sweeps.tracking import session as tracking

log = logging.getLogger("sweeplab")
ENV = "SWEEPLAB_TRIAL_OF"  # JSON: what a job's own process needs from its sweep (see ``run``)
RESULT = "result.json"


def spec() -> dict[str, Any] | None:
    """Set in a job's own processes: which sweep, job and Optuna trial this command belongs to."""
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def first_process() -> bool:
    """Rank 0 of the process group (Lightning sets these variables in the processes it starts)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def run(overrides: list[str], output_dir: Path, job: int, name: str, choices: dict[str, Any]) -> Outcome:
    """Train one job of this sweep in its own process group; its outcome (FAILED where its processes died
    before reporting one)."""
    session = tracking.active()
    trial = current_trial()
    job_spec = {
        "job": job,
        "name": name,
        "choices": choices,
        "overrides": overrides,
        "sweep_id": session.sweep_id if session is not None and session.parent else None,
        "deadline": deadline(),
        "trial": trial.spec() if trial else None,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    result_file = output_dir / RESULT
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "sweeps.run", *config_dirs(), *overrides]
    command.append(f'hydra.run.dir="{output_dir}"')
    env = {**os.environ, ENV: json.dumps(job_spec), "PYTHONPATH": python_path()}
    log.info("[job %d] training in its own process group (DDP)", job)
    code = subprocess.run(command, env=env, check=False).returncode
    if not result_file.exists():
        reason = f"TrialFailed: the trial's processes died (exit code {code}) before reporting a result"
        return Outcome(State.FAILED, reason=reason)
    return Outcome.from_dict(json.loads(result_file.read_text()))


def config_dirs() -> list[str]:
    """This command's ``--config-dir`` (a user's own conf/), for the job's own command."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    sources = HydraConfig.get().runtime.config_sources
    dirs = [s.path for s in sources if s.provider == "command-line" and s.schema == "file"]
    return [arg for path in dirs for arg in ("--config-dir", os.path.abspath(path))]


def _join(cfg: DictConfig, job_spec: dict[str, Any]) -> tracking.Session | None:
    """In the first process: the tracking session joined to the sweep, and the Optuna trial as current."""
    session = tracking.start(cfg.tracking)
    if session is not None and job_spec.get("sweep_id"):
        session.join_sweep(job_spec["sweep_id"])
    trial = job_spec.get("trial")
    if trial:
        from sweeps.search.study import load

        ref = load(trial["study"], trial["storage"], trial["pruner"])
        set_trial(Trial(ref.trial(trial["number"]), trial["study"], trial["storage"], trial["pruner"]))
    return session


def run_rank(cfg: DictConfig, output_dir: Path, job_spec: dict[str, Any]) -> int:
    """The job's own command, in each of its processes; returns the exit code.

    Finished, pruned and deadline-stopped runs exit 0 in every process: Lightning's launcher kills the whole
    group as soon as one of its processes exits otherwise.
    """
    from sweeps.training.callbacks import OptunaPruning, StopAtDeadline  # torch and Lightning load here
    from sweeps.training.fit import prepare
    from sweeps.training.record import run_trial

    first = first_process()
    job = int(job_spec["job"])
    session = record = None
    try:
        session = _join(cfg, job_spec) if first else None
        built = prepare(cfg)
        if session is not None:
            record = session.begin_run(cfg, job_spec["name"], job, job_spec["overrides"], job_spec["choices"])
        set_deadline(job_spec.get("deadline"))
        extra: list[Any] = []
        at = deadline()
        if job_spec.get("trial") and not first:  # the other processes follow the first one's decisions
            extra.append(OptunaPruning(None, built.metric))
            if at:
                extra.append(StopAtDeadline(at))
        outcome = run_trial(cfg, built, output_dir, job if first else None, record, extra)
    except Exception as err:  # noqa: BLE001 - reported to the sweep, which records the trial as failed
        outcome = Outcome.of_error(err)
    finally:
        run_id = record.run_id if record is not None else ""
        if session is not None:
            session.close()
    if first:
        partial = output_dir / f".{RESULT}"
        partial.write_text(json.dumps(outcome.replace(run_id=run_id).to_dict()))
        partial.replace(output_dir / RESULT)  # the sweep never reads half a file
    return 1 if outcome.state is State.FAILED else 0
