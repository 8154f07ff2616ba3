"""Worker processes for parallel trials (``hydra.sweeper.n_jobs`` > 1).

Each worker imports torch and Lightning once and then runs trial after trial, so a trial costs no
interpreter start-up. A worker that dies (SIGKILL, out of memory, a crash in native code) fails only its own
trial: the sweeper is told, and a fresh worker takes its place.

Why not ``concurrent.futures.ProcessPoolExecutor``: the death of one of its workers breaks the whole pool.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from multiprocessing.connection import Connection, wait
from typing import Any

from sweeps.outcome import Outcome, State
from sweeps.support.processes import spawn


class Workers:
    """``count`` worker processes; ``setup`` is sent to each when it starts (tracking, study, sweep).

    ``devices[i]``, where given, is worker i's ``CUDA_VISIBLE_DEVICES`` (see ``gpus``); a worker that
    replaces a dead one gets the same devices.
    """

    def __init__(self, count: int, setup: dict[str, Any], devices: list[str | None] | None = None) -> None:
        self.setup = setup
        self.devices = devices or [None] * count
        self.procs: list[Any] = [None] * count  # subprocess.Popen, or None while restarting
        self.conns: list[Any] = [None] * count  # Connection
        self.busy: list[bool] = [False] * count
        for i in range(count):
            self._start(i)

    def _start(self, i: int) -> None:
        gpus = self.devices[i]
        self.procs[i], self.conns[i] = spawn(
            "sweeps.launch.workers", {"CUDA_VISIBLE_DEVICES": gpus} if gpus else None
        )
        self.conns[i].send(self.setup)
        self.busy[i] = False

    def idle(self) -> list[int]:
        return [i for i, busy in enumerate(self.busy) if not busy]

    def submit(self, i: int, job: dict[str, Any]) -> None:
        self.busy[i] = True
        self.conns[i].send(job)

    def wait(self) -> list[tuple[int, Outcome]]:
        """Block until a busy worker answers or dies: (worker, the trial's outcome); a death is FAILED."""
        ready: list[Any] = wait([c for c, busy in zip(self.conns, self.busy, strict=True) if busy])
        answers = []
        for conn in ready:
            i = self.conns.index(conn)
            try:
                answer: Outcome = conn.recv()
            except (EOFError, OSError):
                code = self.procs[i].wait()
                self.procs[i] = None
                conn.close()
                self._start(i)
                reason = f"WorkerDied: the trial's process died (exit code {code})"
                answers.append((i, Outcome(State.FAILED, reason=reason)))
                continue
            self.busy[i] = False
            answers.append((i, answer))
        return answers

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None:
                conn.close()  # the worker sees EOF and ends (closing its tracking session)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def run_worker(conn: Connection) -> None:
    """The worker: set up once (tracking joined to the sweep, the study), then run each job it is sent
    until the sweeper closes the connection."""
    from omegaconf import OmegaConf

    from sweeps.launch.job import deliver
    from sweeps.search.study import load
    from sweeps.support.verbosity import quiet_sweep
    from sweeps.tracking import session as tracking
    from sweeps.training.context import JobContext, TrialHandle
    from sweeps.training.job import resolved

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    setup = conn.recv()
    tracker = tracking.start(OmegaConf.create(setup["tracking"]), setup.get("sweep_id"))
    ref = load(setup["study"], setup["storage"], setup["pruner"])
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            cfg = OmegaConf.create(job.pop("config"))
            quiet_sweep(search=True, verbose=bool(cfg.get("verbose", False)))
            trial = TrialHandle(ref.trial(int(job["job"])), ref.name, setup["storage"], setup["pruner"])
            outcome = deliver(cfg, JobContext.from_spec(job, tracker=tracker, trial=trial))
            conn.send(resolved(outcome, tracker))  # the sweeper's process knows the run by its id
    finally:
        if tracker is not None:
            tracker.close()


if __name__ == "__main__":
    run_worker(Connection(int(sys.argv[1])))  # the socket the sweeper passed (Workers._start)
