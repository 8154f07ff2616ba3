"""A grid sweep: every combination of the comma lists, each job through Hydra's launcher.

A grid resumes: the same command after an interruption or a kill runs only the jobs that have not finished,
in the same folder and under the same MLflow parent run, and its leaderboard covers every job. What makes
that possible is a record per grid (``mlruns/grids/<key>.json``, the key a hash of the planned jobs: the
same command, the same grid) naming its folder and parent run, and each job's outcome in its folder
(``result.json``). The record goes once the grid has finished; ``hydra.sweeper.resume=false`` starts over.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, cast

from hydra.core.utils import JobReturn
from omegaconf import open_dict, read_write

from sweeps.outcome import Outcome, State
from sweeps.support.interrupt import Interrupted
from sweeps.sweeper.base import Sweep, finish, grid_rows, job_outcome, objective_of
from sweeps.sweeper.report import report
from sweeps.tracking.session import Session

log = logging.getLogger("sweeplab")
RECORDS = Path("mlruns") / "grids"
KEPT = (State.FINISHED, State.PRUNED)  # a job that ended so is not run again


def record_path(jobs: list[list[str]]) -> Path:
    """The grid's record: the same planned jobs (the same command), the same file."""
    return RECORDS / f"{hashlib.sha256(json.dumps(jobs).encode()).hexdigest()[:16]}.json"


def resumable(sweep: Sweep) -> bool:
    """Whether the same command may resume this grid: asked for, sweeplab's jobs (another app's keep
    Hydra's ways and get no ``mlruns/``), run in this process one at a time (another launcher numbers the
    jobs of a batch itself)."""
    return bool(sweep.settings.resume and sweep.in_process and sweep.ours)


def previous(path: Path) -> dict[str, Any] | None:
    """The unfinished earlier run of this grid (its ``record_path``), if any."""
    if not path.is_file():
        return None
    try:
        found: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if Path(found.get("sweep_dir", "")).is_dir() else None


def kept(sweep_dir: Path, i: int) -> Outcome | None:
    """Job ``i``'s outcome from an earlier run of the grid, if it finished."""
    try:
        outcome = Outcome.load(sweep_dir / str(i))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return outcome if outcome.state in KEPT else None


def run_grid(sweep: Sweep, arguments: list[str]) -> list[list[JobReturn]]:
    """Check every job, run those not finished before (a failed one does not stop the others), report;
    exit 1 if all failed."""
    jobs = sweep.plan(arguments)
    resume, record = resumable(sweep), record_path(jobs)
    before = previous(record) if resume else None
    if before:
        with read_write(sweep.config.hydra), open_dict(sweep.config.hydra):
            sweep.config.hydra.sweep.dir = before["sweep_dir"]
            # Each job's config is composed again from these overrides (Hydra's ``load_sweep_config``).
            sweep.config.hydra.overrides.hydra.append(f"hydra.sweep.dir='{before['sweep_dir']}'")

    def rejoin(session: Session, prepared: Any, begin: Any) -> None:
        if before and before.get("parent"):
            session.reopen_sweep(before["parent"])
        else:
            begin()

    session, _, sweep_dir = sweep.start(jobs, parent=rejoin, shared=False)
    if resume:
        record.parent.mkdir(parents=True, exist_ok=True)
        parent_run = session.sweep_id if session else None
        record.write_text(json.dumps({"sweep_dir": str(sweep_dir), "parent": parent_run}))
    outcomes: list[Outcome | None] = [kept(sweep_dir, i) if before else None for i in range(len(jobs))]
    shown = f" (MLflow run {session.sweep_id})" if session else ""
    done = sum(o is not None for o in outcomes)
    again = f", {done} finished before" if before else ""
    log.info("sweep: %d runs -> %s%s%s", len(jobs), sweep_dir, shown, again)
    status = "KILLED"
    results: list[JobReturn] = []
    try:
        if resume:
            for i, job in enumerate(jobs):
                if outcomes[i] is None:
                    ret = sweep.launcher.launch([job], initial_job_idx=i)[0]
                    results.append(ret)
                    outcomes[i] = _keep(sweep_dir, i, job_outcome(ret), session)
        else:
            results = list(sweep.launcher.launch(jobs, initial_job_idx=0))
            outcomes = [job_outcome(r) for r in results]
        ended = cast(list[Outcome], outcomes)  # every job has run by now
        rows = grid_rows(jobs, ended, session)
        metric, mode = objective_of(ended)
        report(rows, metric, mode, sweep_dir, session)
        status = "FINISHED"
    except Interrupted as err:
        left = sum(o is None for o in outcomes)
        finished = f"{len(jobs) - left} of {len(jobs)} runs finished and are kept"
        err.kept = f"{finished}; the same command runs the other {left}"
        raise
    finally:
        finish(session, status)
    record.unlink(missing_ok=True)
    if rows and all(r.state == State.FAILED.value for r in rows):
        raise SystemExit(1)
    return [results]


def _keep(sweep_dir: Path, i: int, outcome: Outcome, session: Session | None) -> Outcome:
    """The job's outcome in its folder, with its MLflow run id (a later command resumes from it)."""
    if session and outcome.run_id:
        outcome = outcome.replace(run_id=session.run_ids([outcome.run_id])[outcome.run_id])
    folder = sweep_dir / str(i)
    if folder.is_dir():
        outcome.save(folder)
    return outcome
