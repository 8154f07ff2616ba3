"""Trials as scheduler jobs, one job per trial, several in flight: Hydra's submitit launcher's job (its
``__call__``, so each job composes and runs exactly as the launcher's own would), submitted through a
submitit executor built from the launcher's settings, and watched here.

Why not the launcher's ``launch``: Hydra's launcher API returns when a whole batch is done, so every slot
waits for the slowest trial of its batch (GPUs idle at each batch barrier). Why not a job array: an
array's parameters are fixed when it is submitted, while Optuna's next trial should be asked when a slot
comes free, from the results so far. So each trial is a job of its own, submitted as soon as a slot is
free; ``n_jobs`` caps the jobs in flight.

A job's end: the result file submitit writes (the task's ``JobReturn``), or, on Slurm, a job that
``squeue`` shows ended (or no longer knows) without one: cancelled (``scancel``), its node lost, a limit.
``squeue`` is asked about all jobs in flight at once, every ``SQUEUE_EVERY_S`` seconds (submitit's own
watcher asks ``sacct``, which a cluster without accounting does not answer). A job Slurm requeues
(``scontrol requeue``, preemption, submitit's own requeue at the time limit) is not ended: it runs again,
resuming from its trial's checkpoint, and its trial is told once, when it finishes. A job seen RUNNING
and then waiting again was requeued: by a stop signal (its run closed KILLED by the job itself), or by
Slurm after its node died (its run left RUNNING, with nobody to close it): ``on_requeue`` is told, and
closes what was left open.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

log = logging.getLogger("sweeplab")
SQUEUE_EVERY_S = 5.0
RESULT_GRACE_S = 5.0  # a result file may show up a little after the job ended (a shared file system)
# Slurm's states of a job that will not run again (REQUEUED, PREEMPTED and the rest still may).
ENDED = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
GONE = "(no longer listed)"
STOPPED = frozenset({"CANCELLED", "NODE_FAIL", GONE})


def is_submitit(launcher: Any) -> bool:
    """Whether ``launcher`` is Hydra's submitit launcher (``submitit_local``, ``submitit_slurm``, ``slurm``).
    Its module, not its class: the plugin is imported only where it is used."""
    return type(launcher).__module__ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher"


def cluster_of(launcher: Any) -> str:
    return "slurm" if type(launcher).__name__ == "SlurmLauncher" else "local"


def make_executor(launcher: Any) -> Any:
    """A submitit executor with the launcher's settings, mapped as the launcher's ``launch`` maps them
    (``submitit_folder`` and ``max_num_timeout`` to the executor, the queue's own keys prefixed)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cluster = cluster_of(launcher)
    params = dict(launcher.params)
    init: dict[str, Any] = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()})
    return executor


@dataclass
class Ended:
    """A job that ended: Hydra's return (from its result file), or why it ended without one."""

    key: int
    ret: JobReturn | None
    why: str = ""
    job_id: str = ""
    state: str = ""  # Slurm's, for a job that ended without a result

    @property
    def stopped(self) -> bool:
        """Stopped from outside (``scancel``, a lost node): not the trial's fault, so it runs again. A
        limit it ran into (time, memory) or a failed job is a failure (it counts toward the budget)."""
        return self.ret is None and self.state in STOPPED


class Jobs:
    """The jobs in flight, by key (the trial's number)."""

    def __init__(
        self, launcher: Any, sweep_dir: Path, on_requeue: Callable[[int, str], None] | None = None
    ) -> None:
        self.launcher = launcher
        self.on_requeue = on_requeue  # (key, Slurm job id) of a job that ran and waits to run again
        self.running: set[int] = set()  # keys of jobs seen RUNNING since they last waited
        self.cluster = cluster_of(launcher)
        self.executor = make_executor(launcher)
        self.jobs: dict[int, Any] = {}
        self.gone_since: dict[int, tuple[float, str]] = {}  # key -> (when seen ended, Slurm's state)
        self.asked = 0.0
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitit '%s' sweep output dir : %s", self.cluster, sweep_dir)

    def submit(self, key: int, overrides: list[str]) -> str:
        """Submit the job that runs ``overrides`` as job number ``key``; its scheduler id."""
        job = self.executor.submit(
            self.launcher, overrides, "hydra.sweep.dir", key, f"job_id_for_{key}", Singleton.get_state()
        )
        self.jobs[key] = job
        where = f"Slurm job {job.job_id}" if self.cluster == "slurm" else f"job {job.job_id}"
        log.info("\t#%d : %s (%s)", key, " ".join(filter_overrides(overrides)), where)
        return str(job.job_id)

    def wait(self, poll_s: float = 0.5) -> list[Ended]:
        """Block until at least one job has ended; those that have."""
        while True:
            ended = self.ended()
            if ended:
                return ended
            time.sleep(poll_s)

    def ended(self) -> list[Ended]:
        done = []
        states = self._squeue() if self.cluster == "slurm" else {}
        for key, job in list(self.jobs.items()):
            if job.paths.result_pickle.exists():
                done.append(self._result(key, job))
            elif self.cluster == "local":
                if job.done():
                    done.append(self._result(key, job))
            elif states is not None:
                state = states.get(str(job.job_id), GONE)
                if state in ENDED or state == GONE:
                    first, _ = self.gone_since.setdefault(key, (time.monotonic(), state))
                    if time.monotonic() - first > RESULT_GRACE_S:
                        why = f"Slurm job {job.job_id} ended {state} without a result"
                        done.append(Ended(key, None, why, str(job.job_id), state))
                else:
                    self.gone_since.pop(key, None)
                    self._watch(key, str(job.job_id), state)
        for item in done:
            self.jobs.pop(item.key, None)
            self.gone_since.pop(item.key, None)
            self.running.discard(item.key)
        return done

    def _watch(self, key: int, job_id: str, state: str) -> None:
        """Note a job's state; a job that ran and waits again was requeued."""
        if state == "RUNNING":
            self.running.add(key)
        elif state in WAITING and key in self.running:
            self.running.discard(key)
            log.warning("search: trial %d's Slurm job %s was requeued: it runs again", key, job_id)
            if self.on_requeue:
                self.on_requeue(key, job_id)

    def _result(self, key: int, job: Any) -> Ended:
        try:
            return Ended(key, job.result(), job_id=str(job.job_id))
        except Exception as err:  # noqa: BLE001 - the job's own failure (submitit's error file), said once
            first = str(err).strip().splitlines()
            return Ended(key, None, f"job {job.job_id} failed: {first[0] if first else type(err).__name__}")

    def _squeue(self, jobs: dict[int, Any] | None = None) -> dict[str, str] | None:
        """Slurm's state of each job in flight (one ``squeue`` for all, at most every ``SQUEUE_EVERY_S``),
        or of ``jobs`` (asked now); None when not asked this time or Slurm did not answer."""
        if jobs is None:
            jobs = self.jobs
            if not jobs or time.monotonic() - self.asked < SQUEUE_EVERY_S:
                return None
            self.asked = time.monotonic()
        ids = ",".join(str(job.job_id) for job in jobs.values())
        try:
            out = subprocess.run(
                ["squeue", "-h", "--states=all", f"--jobs={ids}", "-o", "%i %T"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("search: squeue did not answer (%s); asking again later", err)
            return None
        if out.returncode and "Invalid job id" not in out.stderr:
            log.warning("search: squeue failed: %s", out.stderr.strip())
            return None
        return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)

    def cancel(self, wait_s: float = 90.0) -> None:
        """Cancel every job in flight (the search was stopped): each stops as on ``scancel``, closing its
        run. Waits (up to ``wait_s``) until they have ended, so that their trials are failed only after:
        a job still running would report to a trial already told."""
        jobs, self.jobs = dict(self.jobs), {}
        for job in jobs.values():
            try:
                job.cancel(check=False)
            except OSError as err:
                log.warning("search: could not cancel job %s: %s", job.job_id, err)
        deadline = time.monotonic() + wait_s
        while jobs and time.monotonic() < deadline:
            if self.cluster == "local":
                jobs = {k: j for k, j in jobs.items() if not j.done()}
            else:
                states = self._squeue(jobs)
                if states is not None:
                    jobs = {
                        k: j for k, j in jobs.items() if states.get(str(j.job_id), GONE) not in (*ENDED, GONE)
                    }
            if jobs:
                time.sleep(1.0)
