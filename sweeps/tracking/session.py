"""MLflow records of runs and sweeps, written by a separate tracking process (``tracking.server``).

A ``Session`` owns that process for one command: a sweep (one parent run, a child run per job) or a single
run; a sweep's trial workers attach to it. A ``RunRecord`` (``run_record``) is one training run: params,
tags, per-epoch metrics, artifacts and its final state. Nothing here imports MLflow, and everything is
redacted before it leaves this process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import send_handle
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeps.support import invocation
from sweeps.support.errors import ConfigError, TrackingError
from sweeps.support.processes import holders, pid_tags, spawn
from sweeps.support.secrets import redact_override, redact_text
from sweeps.tracking.requests import ATTACH, CLOSE, DETACH, NICENESS

OUTER = "SWEEPLAB_PARENT_RUN"  # a run id: this command's runs nest under it (``python -m sweeps.benchmark``)


class Session:
    """The tracking process of one command, and the sweep's parent run if there is one."""

    def __init__(
        self, tracking: DictConfig, attached: Connection | None = None, serves_workers: bool = False
    ) -> None:
        """Start the tracking process and open the store (``serves_workers``: a sweep's trial workers will
        write through it, so it is not niced, ``requests.NICENESS``); or, ``attached``, be a trial worker's
        session on the socket its sweep's tracking process answers (``attach``): no process or store of its
        own."""
        uri = str(tracking.uri)
        self.shown_uri = redact_text(uri)
        check_url = None
        if uri.startswith("sqlite:///"):
            path = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{path}"
        elif uri.startswith(("http://", "https://")):
            check_url = uri.rstrip("/") + "/health"
        else:
            raise ConfigError(f"tracking.uri={self.shown_uri}: allowed are sqlite:///PATH and http(s)://HOST")
        self.log_checkpoint = bool(tracking.log_checkpoint)
        self.register_best = str(tracking.get("register_best") or "")
        self.log_model = bool(tracking.get("log_model", False)) or bool(self.register_best)
        self._unread = 0  # replies owed to requests whose caller stopped waiting (an interrupt): ``close``
        self._lock = threading.RLock()  # the seeds of a configuration (``repeats``) train in threads
        self.parent: str | None = None  # the sweep's run handle
        self.outer = os.environ.get(OUTER) or None  # the run this command's top runs nest under, if any
        self._handles = 0
        self._prefix = "run"  # our run handles: run1, run2 ...; an attached worker's: run<random>.1 ...
        self.process: subprocess.Popen | None = None
        self._ready: dict[str, Any] | None = None
        if attached is not None:
            self.conn, self._ready, self._prefix = attached, {}, f"run{uuid.uuid4().hex[:12]}."
            return
        self.process, self.conn = spawn("sweeps.tracking.server", {NICENESS: "0" if serves_workers else "5"})
        artifacts = str(tracking.artifacts) if tracking.get("artifacts") else None
        opened = {
            "uri": uri,
            "experiment": str(tracking.experiment),
            "artifact_root": artifacts,
            "check_url": check_url,
            "system_metrics": bool(tracking.get("system_metrics", False)),
            "retry_seconds": float(tracking.get("retry_seconds") or 60),
        }
        self._write("open", True, opened)

    def pipe_fds(self) -> list[int]:
        """This session's end of its pipe: a process forked from this one closes it (its tracking process
        sees the end of the pipe when this process closes it, not when the last fork exits)."""
        return [self.conn.fileno()] if not self.conn.closed else []

    # -- the pipe (only sweeps/tracking/ uses it; everyone else calls the typed methods below) ---
    def _write(self, request: str, reply: bool, kwargs: dict[str, Any]) -> None:
        """One request down the pipe; a broken pipe means the tracking process died."""
        with self._lock:
            try:
                self.conn.send((request, kwargs, reply))
            except OSError as err:
                raise TrackingError(f"tracking.uri={self.shown_uri}: the tracking process stopped") from err
            self._unread += reply

    def _answer(self, as_error: type[Exception] = TrackingError) -> Any:
        """The reply to the last request; an error answer is raised as ``as_error``, in one line."""
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):  # ended, or died with requests unread (the socket was reset)
            raise TrackingError(f"tracking.uri={self.shown_uri}: the tracking process stopped") from None
        self._unread -= 1
        if status != "ok":
            reason = redact_text(str(value) + self._holders(value))
            raise as_error(f"tracking.uri={self.shown_uri}: {reason}")
        return value

    def _holders(self, error: Any) -> str:
        """Who has a locked SQLite store open (a long write of another command), where /proc can tell."""
        if "database is locked" not in str(error) or not self.shown_uri.startswith("sqlite:///"):
            return ""
        mine = {os.getpid(), self.process.pid} if self.process else {os.getpid()}
        found = holders(self.shown_uri.removeprefix("sqlite:///"), mine)
        return f"; open in {', '.join(found)}" if found else ""

    def _call(self, request: str, **kwargs: Any) -> Any:
        """A request whose answer we wait for (raises TrackingError with one line if the store refuses)."""
        with self._lock:
            self.ready()
            self._write(request, True, kwargs)
            return self._answer()

    def _send(self, request: str, **kwargs: Any) -> None:
        """Fire and forget: the tracking process works through it while training goes on."""
        self._write(request, False, kwargs)

    # -- the requests: fire and forget ---
    def log(
        self,
        run: str,
        *,
        params: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        step: int = 0,
    ) -> None:
        """Params, tags, and metrics at ``step`` of a run (the tracking process holds them back and writes
        each run's together: ``batches``)."""
        self._send("log", run=run, params=params, metrics=metrics, tags=tags, step=step)

    def text(self, run: str, text: str, name: str) -> None:
        """A text file artifact (the config, the overrides, the verdicts) made from ``text``."""
        self._send("text", run=run, text=text, name=name)

    def yaml(self, run: str, data: dict[str, Any], name: str) -> None:
        """A YAML file artifact of ``data`` (written by the tracking process: off the training's path)."""
        self._send("yaml", run=run, data=data, name=name)

    def artifact(self, run: str, path: str, folder: str | None = None) -> None:
        """A copy of the file at ``path`` (skipped if it is gone by then), under ``folder`` if given."""
        self._send("artifact", run=run, path=path, folder=folder)

    def model(self, run: str, path: str, example: Any, output: Any) -> None:
        """The network saved at ``path`` as an MLflow model, with an input example and its output."""
        self._send("model", run=run, path=path, example=example, output=output)

    def datasets(self, run: str, datasets: list[dict[str, Any]]) -> None:
        """The data the run trains and validates on, as MLflow dataset inputs."""
        self._send("datasets", run=run, datasets=datasets)

    def heatmap(self, run: str, rows: list[dict[str, Any]], metric: str, mode: str) -> None:
        """The leaderboard's loss x optimizer picture, on the sweep's run."""
        self._send("heatmap", run=run, rows=rows, metric=metric, mode=mode)

    def optuna_plots(self, run: str, storage: str, study: str, params: list[str]) -> None:
        """The study's pictures (history, importances, contour, intermediate values), on the sweep's run."""
        self._send("optuna_plots", run=run, storage=storage, study=study, params=params)

    def warm_pictures(self, storage: str | None = None) -> None:
        """Let the tracking process import its drawing libraries now (once), and read the study's journal
        (``storage``) so far: after the last trial it reads only what came since."""
        self._send("warm_pictures", storage=storage)

    def end_run(self, run: str, status: str) -> None:
        """Close a run with an MLflow status (its held-back metrics are written first)."""
        self._send("end_run", run=run, status=status)

    def reopen_run(self, run: str) -> None:
        """A closed run RUNNING again, closed by this command (or KILLED if it dies)."""
        self._send("reopen_run", run=run)

    def kill_trial_runs(self, study: str, trials: list[str]) -> None:
        """End as KILLED the runs still RUNNING of these trials of ``study`` (their worker stopped)."""
        self._send("kill_trial_runs", study=study, trials=trials)

    # -- the requests: answered ---
    def register(self, run: str, name: str, tags: dict[str, str]) -> str:
        """Register the model of ``run`` as a new version of ``name``; returns the version."""
        version: str = self._call("register", run=run, name=name, tags=tags)
        return version

    def source_run(self, run_id: str, dest: str) -> dict[str, Any] | None:
        """A run's params and its best checkpoint downloaded into ``dest``; None when there is no such run."""
        found: dict[str, Any] | None = self._call("source_run", run_id=run_id, dest=dest)
        return found

    def trial_runs(self, study: str) -> dict[str, str]:
        """The MLflow run of each trial of Optuna study ``study`` in this experiment: trial number -> run id
        (the runs of a resumed study's earlier commands, or of the other workers on a shared one)."""
        found: dict[str, str] = self._call("trial_runs", study=study)
        return found

    def ready(self) -> dict[str, Any]:
        """Wait until the store is open: one line of ConfigError if it cannot be (a wrong or unreachable
        URI, a damaged or locked store is bad input), of TrackingError if the tracking process died."""
        with self._lock:
            if self._ready is None:
                self._ready = self._answer(as_error=ConfigError)
            return self._ready

    def attach(self, channel: socket.socket) -> None:
        """Let a trial worker of this sweep write through this tracking process, on its own socket
        (``channel``'s other end is the worker's ``Session(..., attached=...)``): one MLflow import and one
        store per sweep instead of one per worker. The store must be open (``ready``)."""
        assert self.process is not None, "only the session that started the tracking process attaches"
        with self._lock:
            self.ready()
            self._write(ATTACH, False, {})
            try:
                send_handle(self.conn, channel.fileno(), self.process.pid)
            except OSError as err:
                raise TrackingError(f"tracking.uri={self.shown_uri}: the tracking process stopped") from err

    def close(self) -> str | None:
        """Wait for every queued write, then stop the tracking process. Returns the first write the store
        refused for want of space (a full disk), if any: the caller decides what that means. An attached
        worker's session only detaches (its writes done, the process is its sweep's)."""
        full = None
        if self.process is None:
            with contextlib.suppress(EOFError, OSError, TrackingError), self._lock:
                self._write(DETACH, True, {})
                while self._unread > 0:
                    self.conn.recv()
                    self._unread -= 1
            self.conn.close()
            return None
        try:
            with self._lock:
                self._write(CLOSE, True, {})
                while self._unread > 1:  # a reply nobody waited for (a signal came first) is not close's
                    self.conn.recv()
                    self._unread -= 1
                full = self.conn.recv()[1]  # every write before it is done
        except (EOFError, OSError, TrackingError):
            pass
        # Its interpreter shutdown (MLflow, SQLAlchemy) takes a second and has nothing left to do; it
        # ignores SIGTERM (its parent stops it, ``support.interrupt``).
        self.process.kill()
        self.process.wait(timeout=10)
        self.conn.close()
        return full

    # -- sweeps ---
    def new_run(self, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        """Create a run without waiting for it: returns our handle for it (see ``run_ids``)."""
        with self._lock:
            self.ready()
            self._handles += 1
            handle = f"{self._prefix}{self._handles}"
            self._send("start_run", handle=handle, name=name, tags=tags, parent=parent)
            return handle

    def sync(self) -> None:
        """Wait until every write queued so far is done (one round trip)."""
        self._call("resolve", handles=[])

    def run_ids(self, handles: Sequence[str]) -> dict[str, str]:
        """MLflow's run ids for our handles (waits for the writes queued so far).

        A run created by another process (a DDP job's own process) is known by its run id already.
        """
        ours = [h for h in handles if h.startswith("run")]
        ids = self._call("resolve", handles=ours) if ours else {}
        return {**{h: h for h in handles if h not in ours}, **ids}

    def fill_run_ids(self, rows: Sequence[Any]) -> None:
        """Replace each leaderboard row's ``run_id`` (our handle, or an id) by its run id (one round trip)."""
        ids = self.run_ids([r.run_id for r in rows if r.run_id])
        for row in rows:
            row.run_id = ids.get(row.run_id, "")

    def start_sweep(self, name: str, sweep_dir: Path, shared: bool = False) -> str:
        """The parent run. A ``shared`` one (a study shared by workers) carries no pid: it outlives the
        process that created it, and the last worker on the study closes it (``search.coordination``)."""
        tags = {
            "sweeplab.kind": "sweep",
            "sweeplab.command": invocation.command(multirun=True),  # as typed: it resumes the sweep
            "sweeplab.sweep_dir": str(sweep_dir),
        }
        if shared:
            tags["sweeplab.shared"] = "true"
        else:
            tags.update(pid_tags())
        self.parent = self.new_run(name, tags, parent=self.outer)
        sweep_id = self.run_ids([self.parent])[self.parent]  # once per sweep: its children are tagged with it
        self.sweep_id = sweep_id
        self.log(self.parent, tags={"sweeplab.sweep_id": sweep_id})
        return sweep_id

    @property
    def sweep_run(self) -> str:
        """The sweep's run, for requests about it: only once ``start_sweep`` or ``join_sweep`` named it."""
        assert self.parent is not None, "no sweep run yet"
        return self.parent

    def reopen_sweep(self, sweep_id: str) -> None:
        """Resume a sweep of this command's that an interruption or a kill ended: its parent run is this
        command's again (RUNNING, with this process's pid)."""
        self.join_sweep(sweep_id)
        self.reopen_run(sweep_id)
        self.log(sweep_id, tags=pid_tags())

    def join_sweep(self, sweep_id: str) -> None:
        """Record runs as children of a sweep that another process started (parallel trial workers)."""
        self.parent = self.sweep_id = sweep_id


def start(
    tracking: DictConfig,
    sweep_id: str | None = None,
    attached: Connection | None = None,
    serves_workers: bool = False,
) -> Session | None:
    """Start the tracking process for this command (None when tracking is off); with ``sweep_id``, its runs
    are children of that sweep, which another process started (a worker, a DDP rank, a submitit job);
    ``attached``: a trial worker's socket to its sweep's tracking process (``Session.attach``);
    ``serves_workers``: the sweep's trial workers will write through it (``Session``)."""
    if not tracking.get("enabled", False):
        return None
    session = Session(tracking, attached, serves_workers)
    if sweep_id:
        session.join_sweep(sweep_id)
    return session


def run_name(job: int | None, overrides: Sequence[str]) -> str:
    """What the MLflow UI lists: the job number and its overrides (secrets masked)."""
    shown = " ".join(redact_override(o) for o in overrides) or "defaults"
    return (shown if job is None else f"{job}: {shown}")[:250]
