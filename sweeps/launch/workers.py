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
from pathlib import Path
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


def _trial(setup: dict[str, Any], session: Any, ref: Any, job: dict[str, Any]) -> Outcome:
    """One trial in this worker: a DDP trainer in a process group of its own, anything else here."""
    from omegaconf import OmegaConf

    from sweeps.launch import ddp
    from sweeps.support.context import Trial, set_trial
    from sweeps.training.checks import distributed
    from sweeps.training.fit import prepare
    from sweeps.training.record import run_trial
    from sweeps.training.seeds import repeated

    number = int(job["number"])
    set_trial(Trial(ref.trial(number), setup["study"], setup["storage"], setup["pruner"]))
    cfg = OmegaConf.create(job["config"])
    output_dir = Path(job["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    record = None
    try:
        if repeated(cfg):  # one configuration over several seeds or folds (``training.repeats``)
            from sweeps.training.repeats import run_configuration

            name, overrides, choices = job["name"], job["overrides"], job["choices"]
            return run_configuration(cfg, output_dir, number, name, overrides, choices, session)
        if distributed(cfg.trainer):  # DDP: the trial's own process group (``ddp``)
            return ddp.run(job["overrides"], output_dir, number, job["name"], job["choices"])
        built = prepare(cfg)
        if session is not None:
            record = session.begin_run(cfg, job["name"], number, job["overrides"], job["choices"])
        outcome = run_trial(cfg, built, output_dir, number, record)
    except Exception as err:  # noqa: BLE001 - the trial failed; the worker goes on
        outcome = Outcome.of_error(err)
    finally:
        set_trial(None)
    return outcome.replace(run_id=record.run_id) if record is not None else outcome


def run_worker(conn: Connection) -> None:
    """The worker: set up once, then run each trial it is sent until the sweeper closes the connection."""
    from omegaconf import OmegaConf

    from sweeps.search.study import load
    from sweeps.support.context import set_deadline
    from sweeps.tracking import session as tracking

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    setup = conn.recv()
    set_deadline(setup.get("deadline"))
    session = tracking.start(OmegaConf.create(setup["tracking"]))
    if session is not None and setup.get("sweep_id"):
        session.join_sweep(setup["sweep_id"])
    ref = load(setup["study"], setup["storage"], setup["pruner"])
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            conn.send(_trial(setup, session, ref, job))
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    run_worker(Connection(int(sys.argv[1])))  # the socket the sweeper passed (Workers._start)
