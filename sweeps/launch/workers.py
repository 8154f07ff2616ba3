"""Worker processes for parallel trials (``hydra.sweeper.n_jobs`` > 1).

Each worker imports torch and Lightning once and then runs trial after trial, so a trial costs no
interpreter start-up. Workers start before the study and the tracking store are open (``Workers`` then
``begin``): their imports overlap that set-up instead of delaying the first trial. They write their runs
through the sweep's tracking process (each on a socket of its own, ``Session.attach``), so no worker imports
MLflow or opens the store. Each gets its share of the machine's cores as torch threads
(``support.threads``). A worker that dies (SIGKILL, out of memory, a crash in native code) fails only its
own trial: the sweeper is told, its open runs are closed KILLED, and a fresh worker takes its place.

Forked workers: on CPU, where the sweep checks its configs (and so imports torch), the workers are forked
from the sweep's process right after that import and before any torch op has run (``fork``): they import
nothing again, and no thread pool of torch or OpenMP exists yet to be broken by the fork (GNU OpenMP does
not survive a fork once it has run). Where that point never comes (no config check), and for a worker that
replaces a dead one (by then this process has trained or checked), a fresh interpreter is started instead.
On 2 cores with 0.3 s trials, three interpreters importing torch at once cost more than the second
worker saves; forked, they cost nothing.

Why not ``concurrent.futures.ProcessPoolExecutor``: the death of one of its workers breaks the whole pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from sweeps.outcome import Outcome, State
from sweeps.support import interrupt, startup_gc, threads
from sweeps.support.processes import spawn
from sweeps.support.stdlib_compat import exit_now, leave_fork

if TYPE_CHECKING:
    from sweeps.tracking.session import Session

log = logging.getLogger("sweeplab")

STOP_SECONDS = 60  # how long a stopped worker may take to close its trial's run


class Forked:
    """A worker forked from this process: what ``Workers`` asks of a ``subprocess.Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Workers:
    """``count`` worker processes; ``begin`` sends each the set-up (tracking, study, sweep), and a worker
    that replaces a dead one gets it too. Started at once as fresh interpreters (they import torch and
    Lightning meanwhile), or, ``forked``, later by ``fork`` from this process once it has imported them.

    ``devices[i]``, where given, is worker i's ``CUDA_VISIBLE_DEVICES`` (see ``gpus``); a worker that
    replaces a dead one gets the same devices.
    """

    def __init__(self, count: int, devices: list[str | None] | None = None, forked: bool = False) -> None:
        self.setup: dict[str, Any] | None = None
        self.tracker: Session | None = None
        self.devices = devices or [None] * count
        self.procs: list[Any] = [None] * count  # subprocess.Popen, or None while restarting
        self.conns: list[Any] = [None] * count  # Connection
        self.channels: list[socket.socket | None] = [None] * count  # to hand to the tracking process
        self.busy: list[bool] = [False] * count
        self.env = threads.environment(count)
        log.info("search: %s", threads.describe(count, "trial workers"))
        # Linux only (a fork after the Objective-C runtime loaded is unsafe on macOS); CUDA never crosses one
        self.to_fork = forked and not any(self.devices) and sys.platform == "linux"
        if not self.to_fork:
            self._start_all()

    def fork(self, keep_out: Sequence[int] = ()) -> None:
        """Fork the workers now (if ``forked`` and not done yet): call right after importing torch, before
        any torch op. ``keep_out``: file descriptors of this process that no worker may hold open (the
        sweep's own socket to its tracking process, whose end must come when this process closes it)."""
        if not self.to_fork:
            return
        self.to_fork = False
        # What ``run_worker`` imports, once here for all of them.
        from sweeps.launch import job  # noqa: F401
        from sweeps.search import study  # noqa: F401
        from sweeps.support import verbosity  # noqa: F401
        from sweeps.tracking import session  # noqa: F401
        from sweeps.training import context  # noqa: F401
        from sweeps.training import job as training_job  # noqa: F401

        for i in range(len(self.procs)):
            self._fork(i, keep_out)

    def _fork(self, i: int, keep_out: Sequence[int]) -> None:
        mine, theirs = socket.socketpair()  # the worker's socket to the sweep's tracking process
        ours, its = socket.socketpair()  # the sweeper's pipe to the worker
        sys.stdout.flush()
        sys.stderr.flush()  # or what is buffered would be written twice
        with interrupt.spawning():
            pid = os.fork()
        if pid == 0:  # the worker; it never returns from here
            others = [c.fileno() for c in self.conns if c is not None]
            others += [c.fileno() for c in self.channels if c is not None]
            _forked_worker(its, theirs, [mine.fileno(), ours.fileno(), *others, *keep_out], self.env)
        its.close()
        theirs.close()
        self.procs[i], self.conns[i], self.channels[i] = Forked(pid), Connection(ours.detach()), mine
        self.busy[i] = False

    def begin(self, setup: dict[str, Any], tracker: Session | None) -> None:
        """Send every worker the sweep's set-up: from now on they take trials. Each writes its runs through
        ``tracker``'s process (attached on the socket it was started with), not a tracking process of its
        own: one MLflow import and store for the sweep, not one per worker."""
        self.setup, self.tracker = setup, tracker
        if self.to_fork:  # the sweep never imported torch for a config check: fresh interpreters, which
            self.to_fork = False  # get the set-up as they start
            self._start_all()
            return
        for i, conn in enumerate(self.conns):
            self._attach(i)
            conn.send(setup)

    def _start_all(self) -> None:
        for i in range(len(self.procs)):
            self._start(i)

    def _start(self, i: int) -> None:
        gpus = self.devices[i]
        env = {**self.env, "CUDA_VISIBLE_DEVICES": gpus} if gpus else self.env
        mine, theirs = socket.socketpair()  # the worker's socket to the sweep's tracking process
        self.procs[i], self.conns[i] = spawn("sweeps.launch.workers", env, also=theirs)
        theirs.close()
        self.channels[i] = mine
        if self.setup is not None:
            self._attach(i)
            self.conns[i].send(self.setup)
        self.busy[i] = False

    def _attach(self, i: int) -> None:
        """Hand worker ``i``'s socket to the tracking process (if tracking is on), and let go of it here."""
        channel, self.channels[i] = self.channels[i], None
        if channel is not None:
            if self.tracker is not None:
                self.tracker.attach(channel)
            channel.close()

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

    def abandon(self) -> None:
        """End workers that never got a set-up (the sweep refused to start): nothing of theirs to keep."""
        for proc in self.procs:
            if proc is not None:
                proc.kill()
                proc.wait()
        self._hang_up()
        for channel in self.channels:
            if channel is not None:
                channel.close()

    def close(self) -> None:
        """Let the workers go (``reap`` waits for them to end); one still running a trial (the sweep was
        interrupted) is first told to stop it (``interrupt.stop_signal``: at its next batch, its MLflow run
        closed KILLED with the sweep's cause), and its answer awaited."""
        busy = [i for i, busy in enumerate(self.busy) if busy and self.procs[i] is not None]
        for i in busy:
            self.procs[i].send_signal(interrupt.stop_signal())
        pending, deadline = [self.conns[i] for i in busy], time.monotonic() + STOP_SECONDS
        while pending and (left := deadline - time.monotonic()) > 0:  # one deadline for all of them
            ready: list[Any] = wait(pending, left)
            for conn in ready:
                pending.remove(conn)
                with contextlib.suppress(EOFError, OSError):
                    conn.recv()
        self._hang_up()

    def reap(self) -> None:
        """Wait for the workers ``close`` let go (a minute at most each, then SIGKILL). Not in ``close``:
        while they end (their tracking sessions detach, each leaves), the sweep reports and its pictures
        draw."""
        self._hang_up()  # (a no-op once ``close`` did it)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def _hang_up(self) -> None:
        """Close the sweep's end of each worker's connection: the worker sees EOF and ends (closing its
        tracking session)."""
        for conn in self.conns:
            if conn is not None:
                conn.close()


def run_worker(conn: Connection, channel: Connection) -> None:
    """The worker: import what trials need and take its share of the cores while the sweep sets up; set up
    once (its tracking session on ``channel``, joined to the sweep; the study), then run each job it is sent
    until the sweeper closes the connection."""
    threads.apply()
    from omegaconf import OmegaConf

    from sweeps.launch.job import deliver
    from sweeps.search.study import load
    from sweeps.support.verbosity import quiet_sweep
    from sweeps.tracking import session as tracking
    from sweeps.training.context import JobContext, TrialHandle

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        setup = conn.recv()
    except (EOFError, OSError):  # the sweep ended before it began
        return
    quiet_sweep(search=True, verbose=bool(setup.get("verbose", False)))
    tracker = tracking.start(OmegaConf.create(setup["tracking"]), setup.get("sweep_id"), attached=channel)
    if tracker is None:
        channel.close()
    ref = load(setup["study"], setup["storage"], setup["pruner"])
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            cfg = OmegaConf.create(job.pop("config"))
            trial = TrialHandle(ref.trial(int(job["job"])), ref.name, setup["storage"], setup["pruner"])
            try:
                outcome = deliver(cfg, JobContext.from_spec(job, tracker=tracker, trial=trial))
            except BaseException as err:  # stopped by the sweeper: the run is closed KILLED
                if isinstance(err, Exception):
                    raise  # a fault of this worker's: it dies, and the sweeper fails the trial (WorkerDied)
                with contextlib.suppress(OSError):
                    conn.send(Outcome.of_error(err))
                return
            conn.send(outcome)  # its run by our handle: the sweep's tracking process knows it by then
    finally:
        if tracker is not None:
            tracker.close()


def _serve(conn: Connection, channel: Connection) -> None:
    """A worker's life, spawned or forked: the terminal's Ctrl-C is the sweeper's (it sends
    ``stop_signal()``); a stop while it waited for a job or set up ends it quietly."""
    interrupt.helper(stoppable=True)
    with contextlib.suppress(interrupt.Interrupted):
        run_worker(conn, channel)


def _forked_worker(
    conn: socket.socket, channel: socket.socket, close: list[int], env: dict[str, str]
) -> None:
    """The forked worker: let go of what is the sweep's (its sockets, its log handlers, its exit
    handlers), take the terminal's signals as a spawned worker does, run; leave without returning."""
    code = 0
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.environ.update(env)
        logging.getLogger().handlers.clear()  # the sweep's (its log file too); ``run_worker`` sets its own
        _serve(Connection(conn.detach()), Connection(channel.detach()))
    except BaseException:  # noqa: BLE001 - as a spawned worker would: its traceback, exit 1 (WorkerDied)
        traceback.print_exc()
        code = 1
    finally:
        leave_fork(code)  # the sweep's exit handlers and objects are not this process's to run or tear down


if __name__ == "__main__":
    startup_gc.pause()  # resumed when its first job is built (``training.fit.prepare``)
    # the sockets the sweeper passed (Workers._start): its own, and one to the sweep's tracking process
    _serve(Connection(int(sys.argv[1])), Connection(int(sys.argv[2])))
    # Its tracking session is closed (every write done): tearing torch and Lightning down would only make
    # the sweep wait (``Workers.close``) seconds longer.
    exit_now(0)
