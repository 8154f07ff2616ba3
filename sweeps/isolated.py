"""Sweep jobs that train in a process group of their own: DDP trainers.

Lightning's ``ddp`` strategy starts its extra processes by re-running this command's ``sys.argv``; inside a
multirun that re-runs the whole sweep in every extra process (see shared/DESIGN.md). So the sweep runs a
DDP job as a single-run command of its own, ``python -m sweeps.run <the job's overrides>``, in the job's
folder, and Lightning re-executes that. Its first process records the MLflow run as a child of the sweep,
reports to the Optuna trial (its pruning decision is broadcast to the others), and leaves the outcome in
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

from sweeps import current_trial, tracking
from sweeps.child import ROOT
from sweeps.deadline import DeadlineReached, deadline, set_deadline
from sweeps.secrets import redact_text

log = logging.getLogger("sweeplab")
ENV = "SWEEPLAB_TRIAL_OF"  # JSON: what a job's own process needs from its sweep (see ``run``)
RESULT = "result.json"


class TrialFailed(RuntimeError):
    """The job's own process reported a failure, or died before reporting."""


def spec() -> dict[str, Any] | None:
    """Set in a job's own processes: which sweep, job and Optuna trial this command belongs to."""
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def first_process() -> bool:
    """Rank 0 of the process group (Lightning sets these variables in the processes it starts)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def run(overrides: list[str], output_dir: Path, job: int, name: str, choices: dict[str, Any]) -> Any:
    """Train one job of this sweep in its own process group; returns its RunResult or raises.

    Raises ``optuna.TrialPruned`` for a pruned trial and ``TrialFailed`` otherwise; both, like the
    result, carry ``sweeplab_run`` (its MLflow run id) for the leaderboard.
    """
    from sweeps.train import RunResult

    session = tracking.active()
    trial = current_trial.current()
    sweep_id = session.sweep_id if session is not None and session.parent else None
    job_spec = {
        "job": job,
        "name": name,
        "choices": choices,
        "overrides": overrides,
        "sweep_id": sweep_id,
        "deadline": deadline(),
        "trial": {**trial._asdict(), "trial": trial.trial._trial_id} if trial else None,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    result_file = output_dir / RESULT
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "sweeps.run", *overrides, f'hydra.run.dir="{output_dir}"']
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, ENV: json.dumps(job_spec), "PYTHONPATH": path}
    log.info("[job %d] training in its own process group (DDP)", job)
    code = subprocess.run(command, env=env, check=False).returncode
    if not result_file.exists():
        raise TrialFailed(f"the trial's processes died (exit code {code}) before reporting a result")
    outcome = json.loads(result_file.read_text())
    if outcome["state"] == "ok":
        details = {k: outcome[k] for k in ("metric", "mode", "epochs", "seconds", "metrics", "checkpoint")}
        result = RunResult(outcome["value"], **details)
        result.sweeplab_run = outcome["run_id"]
        return result
    if outcome["state"] == "pruned":
        import optuna

        err: Exception = optuna.TrialPruned(outcome["reason"])
    elif outcome["state"] == "stopped":
        err = DeadlineReached(outcome["reason"])
    else:
        err = TrialFailed(outcome["reason"])
    err.sweeplab_run = outcome["run_id"]  # type: ignore[attr-defined]
    raise err


def serve(cfg: DictConfig, output_dir: Path, job_spec: dict[str, Any]) -> int:
    """The job's own command, in each of its processes; returns the exit code.

    Finished, pruned and deadline-stopped runs exit 0 in every process: Lightning's launcher kills the whole
    group as soon as one of its processes exits otherwise.
    """
    from sweeps.pruning import OptunaPruning, Pruned, StopAtDeadline
    from sweeps.run import run_tracked
    from sweeps.train import prepare

    first = first_process()
    job = int(job_spec["job"])
    session = record = None
    outcome: dict[str, Any] = {"run_id": ""}
    try:
        if first:
            session = tracking.start(cfg.tracking)
            if session is not None and job_spec.get("sweep_id"):
                session.join_sweep(job_spec["sweep_id"])
        trial = job_spec.get("trial")
        if trial and first:
            import optuna

            from sweeps import search

            study = search.load_study(trial["study"], trial["storage"], trial["pruner"])
            trial_id = trial.pop("trial")
            current_trial.set_current(optuna.trial.Trial(study, trial_id), **trial)
        built = prepare(cfg)
        if session is not None:
            record = session.begin_run(cfg, job_spec["name"], job, job_spec["overrides"], job_spec["choices"])
        set_deadline(job_spec.get("deadline"))
        extra = []
        if trial and not first:  # the other processes follow the first one's decisions
            extra.append(OptunaPruning(None, built.metric))
            if deadline():
                extra.append(StopAtDeadline(deadline()))
        result = run_tracked(cfg, built, output_dir, job if first else None, record, extra)
        outcome.update(
            state="ok",
            value=float(result),
            metric=result.metric,
            mode=result.mode,
            epochs=result.epochs,
            seconds=result.seconds,
            metrics=result.metrics,
            checkpoint=result.checkpoint,
        )
    except Pruned as err:
        outcome.update(state="pruned", reason=str(err))
    except DeadlineReached as err:
        outcome.update(state="stopped", reason=str(err))
    except Exception as err:  # noqa: BLE001 - reported to the sweep, which records the trial as failed
        outcome.update(state="failed", reason=redact_text(f"{type(err).__name__}: {err}".splitlines()[0]))
    finally:
        if record is not None:
            outcome["run_id"] = record.run_id
        if session is not None:
            session.close()
    if first:
        partial = output_dir / f".{RESULT}"
        partial.write_text(json.dumps(outcome))
        partial.replace(output_dir / RESULT)  # the sweep never reads half a file
    return 1 if outcome["state"] == "failed" else 0
