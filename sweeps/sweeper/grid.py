"""A grid sweep: every combination of the comma lists, each job through Hydra's launcher."""

from __future__ import annotations

import logging

from hydra.core.utils import JobReturn

from sweeps.outcome import State
from sweeps.sweeper.base import Sweep, finish, grid_rows, job_outcome, objective_of
from sweeps.sweeper.report import report

log = logging.getLogger("sweeplab")


def run_grid(sweep: Sweep, arguments: list[str]) -> list[list[JobReturn]]:
    """Check every job, run them all (a failed one does not stop the others), report; exit 1 if all failed."""
    jobs = sweep.plan(arguments)
    session, _, sweep_dir = sweep.start(arguments, jobs)
    shown = f" (MLflow run {session.sweep_id})" if session else ""
    log.info("sweep: %d runs -> %s%s", len(jobs), sweep_dir, shown)
    status = "KILLED"
    try:
        results = list(sweep.launcher.launch(jobs, initial_job_idx=0))
        outcomes = [job_outcome(r) for r in results]
        rows = grid_rows(jobs, outcomes, session)
        metric, mode = objective_of(outcomes)
        report(rows, metric, mode, sweep_dir, session)
        status = "FINISHED"
    finally:
        finish(session, status)
    if rows and all(r.state == State.FAILED.value for r in rows):
        raise SystemExit(1)
    return [results]
