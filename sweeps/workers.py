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

from sweeps.child import spawn


class Workers:
    """``count`` worker processes; ``setup`` is sent to each when it starts (tracking, study, sweep).

    ``devices[i]``, where given, is worker i's ``CUDA_VISIBLE_DEVICES`` (see sweeps/gpus.py); a worker that
    replaces a dead one gets the same devices.
    """

    def __init__(self, count: int, setup: dict[str, Any], devices: list[str | None] | None = None) -> None:
        self.setup = setup
        self.devices = devices or [None] * count
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.conns: list[Connection | None] = [None] * count
        self.busy: list[bool] = [False] * count
        for i in range(count):
            self._start(i)

    def _start(self, i: int) -> None:
        gpus = self.devices[i]
        self.procs[i], self.conns[i] = spawn(
            "sweeps.workers", {"CUDA_VISIBLE_DEVICES": gpus} if gpus else None
        )
        self.conns[i].send(self.setup)
        self.busy[i] = False

    def idle(self) -> list[int]:
        return [i for i, busy in enumerate(self.busy) if not busy]

    def submit(self, i: int, job: dict[str, Any]) -> None:
        self.busy[i] = True
        self.conns[i].send(job)

    def wait(self) -> list[tuple[int, tuple | None]]:
        """Block until a busy worker answers or dies: (worker, answer), where a death answers None."""
        ready = wait([c for c, busy in zip(self.conns, self.busy, strict=True) if busy])
        answers = []
        for conn in ready:
            i = self.conns.index(conn)
            try:
                answer: tuple | None = conn.recv()
            except (EOFError, OSError):
                code = self.procs[i].wait()
                answer = None
                self.procs[i] = None
                conn.close()
                self._start(i)
                answers.append((i, ("died", f"the trial's process died (exit code {code})")))
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


def serve(conn: Connection) -> None:
    """The worker: set up once, then run each trial it is sent until the sweeper closes the connection."""
    import optuna
    from omegaconf import OmegaConf

    from sweeps import current_trial, isolated, search, tracking
    from sweeps.checks import distributed
    from sweeps.deadline import set_deadline
    from sweeps.run import run_tracked
    from sweeps.train import prepare

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    setup = conn.recv()
    set_deadline(setup.get("deadline"))
    session = tracking.start(OmegaConf.create(setup["tracking"]))
    if session is not None and setup.get("sweep_id"):
        session.join_sweep(setup["sweep_id"])
    study = search.load_study(setup["study"], setup["storage"], setup["pruner"])
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            trial = optuna.trial.Trial(study, job["trial_id"])
            current_trial.set_current(trial, setup["study"], setup["storage"], setup["pruner"])
            cfg = OmegaConf.create(job["config"])
            output_dir = Path(job["output_dir"])
            output_dir.mkdir(parents=True, exist_ok=True)
            record = None
            run_id = ""
            try:
                if distributed(cfg.trainer):  # DDP: the trial's own process group (sweeps/isolated.py)
                    result = isolated.run(
                        job["overrides"], output_dir, trial.number, job["name"], job["choices"]
                    )
                    run_id = result.sweeplab_run
                else:
                    built = prepare(cfg)
                    if session is not None:
                        record = session.begin_run(
                            cfg, job["name"], trial.number, job["overrides"], job["choices"]
                        )
                    result = run_tracked(cfg, built, output_dir, trial.number, record)
                answer: tuple = ("ok", float(result), result.epochs, result.seconds)
            except optuna.TrialPruned as err:
                answer = ("pruned", str(err))
                run_id = getattr(err, "sweeplab_run", "")
            except Exception as err:  # noqa: BLE001 - the trial failed; the worker goes on
                answer = ("failed", f"{type(err).__name__}: {err}".splitlines()[0])
                run_id = getattr(err, "sweeplab_run", "")
            finally:
                current_trial.set_current(None)
            conn.send((*answer, record.run_id if record is not None else run_id))
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))  # the socket the sweeper passed (Workers._start)
