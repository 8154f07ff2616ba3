"""The MLflow store, opened in the tracking process: what it does with each request, and the only place that
imports MLflow and writes to the store (``server`` runs it; ``session`` sends the requests). Everything is
redacted before it gets here."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from filelock import FileLock

from sweeps.support.processes import alive
from sweeps.tracking import optuna_pictures, sqlite_file, study_runs
from sweeps.tracking.batches import Held, write
from sweeps.tracking.environment import environment_tags
from sweeps.tracking.inputs import dataset_inputs
from sweeps.tracking.models import log_model, register, system_monitor

FLUSH_SECONDS = 2.0


class Store:
    """MLflow writes for one command. Runs are named by handles the caller chose (so that it never waits
    for a run to be created); ``ids`` maps them to MLflow run ids. Metrics, params and tags are held back
    and written together (``batches``): when the callers go quiet, after ``FLUSH_SECONDS``, when the run
    ends, and before anything that reads the store back."""

    def __init__(self) -> None:
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." and the like
            logging.getLogger(name).setLevel(logging.WARNING)

        self.client_type = MlflowClient
        self.client: Any = None
        self.experiment_id = ""
        self.ids: dict[str, str] = {}
        self.open_runs: set[str] = set()
        self.folders: dict[str, str] = {}  # artifact URIs of the runs this process created
        self.pending: dict[str, Held] = {}
        self.pending_since = 0.0
        self.system_metrics = False
        self.monitors: dict[str, Any] = {}
        self._journal: tuple[str, Any] | None = None  # the sweep's journal file and its open storage
        self._warming: threading.Thread | None = None  # importing the drawing libraries (``warm_pictures``)
        self._drawing: list[tuple[str, Any, optuna_pictures.Drawing]] = []  # run, folder, its pictures

    # -- requests ---
    def open(
        self,
        uri: str,
        experiment: str,
        artifact_root: str | None,
        check_url: str | None,
        system_metrics: bool = False,
        retry_seconds: float = 60,
    ) -> dict:
        """Reach the store, create the experiment if needed, close runs whose process died."""
        self.system_metrics = system_metrics
        if check_url:
            _probe(check_url)
            # A server away for a while: MLflow's own retries (urllib3's back-off, 0, 4, 8, 16 ... s) cover
            # ``retry_seconds`` before a write fails; training goes on meanwhile (this is its own process).
            retries = next(r for r in range(1, 11) if 2 ** (r + 1) - 4 >= retry_seconds or r == 10)
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
        with _store_lock(uri):  # schema and experiment creation race between processes otherwise
            if uri.startswith("sqlite:///"):  # created or upgraded whole, or not at all
                sqlite_file.ready(Path(uri.removeprefix("sqlite:///")).resolve(), self.client_type)
            self.connect(uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = Path(artifact_root).resolve().as_uri() if artifact_root else None
                kind = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens on training runs
                self.experiment_id = self._create_experiment(experiment, location, kind)
            else:
                self.experiment_id = found.experiment_id
        reaped = self.reap()
        return {"experiment_id": self.experiment_id, "reaped": reaped}

    def _create_experiment(self, name: str, location: str | None, tags: dict[str, str]) -> str:
        """Create the experiment; where another process (on any machine: a tracking server takes no lock
        of ours) created it first, use theirs."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as err:
            found = self.client.get_experiment_by_name(name)
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
                raise
            return found.experiment_id

    def connect(self, uri: str) -> Any:
        """A client for ``uri``; credentials in it move to MLflow's variables, out of every URL it prints."""
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme.startswith("http") and parts.username is not None:
            os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(parts.username)
            os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(parts.password or "")
            uri = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        import mlflow

        if uri.startswith(
            "sqlite:///"
        ):  # MLflow keeps one engine per URI: a relative path would be the first
            uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"  # folder's in another
        self.client = self.client_type(tracking_uri=uri)
        # MLflow resolves a registered model's ``models:/`` source through its process-wide tracking URI: this
        # process serves this one store only.
        mlflow.set_tracking_uri(uri)
        return self.client

    def reap(self) -> list[str]:
        """End as KILLED the RUNNING runs of this host whose process is gone (killed, crashed, lost power)."""
        host = socket.gethostname()
        runs = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
        reaped = []
        for run in runs:
            tags = run.data.tags
            if tags.get("sweeplab.host") != host or not tags.get("sweeplab.pid"):
                continue
            if alive(int(tags["sweeplab.pid"]), tags.get("sweeplab.pid_start", "")):
                continue
            self._kill(run.info.run_id, "its process ended without closing the run")
            reaped.append(run.info.run_id)
        return reaped

    def _kill(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, "sweeplab.state", "KILLED")
        self.client.set_tag(run_id, "sweeplab.reason", reason)
        self.client.set_terminated(run_id, "KILLED")
        self.open_runs.discard(run_id)

    def start_run(self, handle: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        tags = {**environment_tags(), **tags}
        if parent:
            tags = {**tags, "mlflow.parentRunId": self.ids.get(parent, parent)}  # a handle, or a run id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.ids[handle] = run.info.run_id
        self.folders[run.info.run_id] = run.info.artifact_uri
        self.open_runs.add(run.info.run_id)
        if self.system_metrics and tags.get("sweeplab.kind") == "run":
            self.monitors[run.info.run_id] = system_monitor(self.client, run.info.run_id)
        return run.info.run_id

    def _id(self, run: str) -> str:
        """The MLflow run id of a handle of ours, or ``run`` itself (another process's run, e.g. a parent
        run that this process joined)."""
        return self.ids.get(run, run)

    def kill_trial_runs(self, study: str, trials: list[str]) -> None:
        """End as KILLED the RUNNING runs of these Optuna trials: their worker stopped, on any machine
        (a worker found their trials stale). A worker's own tracking process usually did it already."""
        self.flush()  # (a run's held FINISHED must not land after its KILLED)
        for run in study_runs.of_study(self.client, self.experiment_id, study, running=True):
            if run.data.tags.get("sweeplab.trial") in trials:
                self._kill(run.info.run_id, "its worker stopped (stale trial)")

    def trial_runs(self, study: str) -> dict[str, str]:
        """Trial number -> run id of the runs of ``study``'s trials, the latest where a trial has several
        (not a repeat's seeds or folds: their configuration's run is the trial's)."""
        self.flush()
        found: dict[str, str] = {}
        for run in study_runs.of_study(self.client, self.experiment_id, study):  # the latest first
            trial, kind = run.data.tags.get("sweeplab.trial"), run.data.tags.get("sweeplab.kind")
            if trial is not None and kind not in ("seed", "fold"):
                found.setdefault(trial, run.info.run_id)
        return found

    def resolve(self, handles: list[str]) -> dict[str, str]:
        """Run ids of our handles; a run id (of a run another process made, e.g. a submitit job) stays."""
        self.flush()  # "every write so far is done" (``Session.sync``)
        return {h: self._id(h) for h in handles if h in self.ids or not h.startswith("run")}

    def log(
        self,
        run: str,
        metrics: dict[str, float] | None = None,
        step: int = 0,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Held back (``batches``), written with the run's other writes by ``flush``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if params and run in self.pending and self.pending[run].conflicts(params):
            self.flush(run)  # MLflow refuses the changed param, and says so, without taking the rest along
        if not self.pending:
            self.pending_since = time.monotonic()
        held = self.pending.setdefault(run, Held())
        measured = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        held.add(measured, params or {}, tags or {})

    def flush(self, run: str | None = None) -> None:
        """Write what is held back (of one run, or of all): a run's metrics, params and tags in one batch, and
        the pictures being drawn for it, once drawn."""
        errors = self._pictures(run)
        for handle in [run] if run else list(self.pending):
            held = self.pending.pop(handle, None)
            try:
                if held is not None:
                    write(self.client, self._id(handle), held)
            except Exception as err:  # noqa: BLE001 - the other runs' writes go on; the first is raised
                errors.append(err)
        if errors:
            raise errors[0]

    def due(self) -> bool:
        return bool(self.pending) and time.monotonic() - self.pending_since > FLUSH_SECONDS

    def artifact(self, run: str, path: str, folder: str | None = None) -> None:
        if Path(path).exists():
            self._log_file(run, path, folder)

    def model(self, run: str, path: str, example: Any, output: Any) -> None:
        """The run's network as an MLflow model (``models``)."""
        self.flush(run)
        log_model(self.client, self._id(run), path, example, output)

    def register(self, run: str, name: str, tags: dict[str, str]) -> str:
        """The model of run ``run`` (a run id) as a new version of the registered model ``name``."""
        self.flush()
        return register(self.client, self.experiment_id, self._id(run), name, tags)

    def datasets(self, run: str, datasets: list[dict[str, Any]]) -> None:
        """The run's training and validation data as MLflow dataset inputs (``inputs``)."""
        self.client.log_inputs(self._id(run), datasets=dataset_inputs(datasets))

    def text(self, run: str, text: str, name: str) -> None:
        """``text`` as the run's artifact file ``name`` (a ``folder/file`` name too)."""
        import tempfile

        folder, _, file = name.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / file).write_text(text, encoding="utf-8")
            self._log_file(run, str(Path(tmp) / file), folder or None)

    def _log_file(self, run: str, path: str, folder: str | None) -> None:
        """A file as an artifact of the run. A run created here, with a local artifact folder, gets it through
        its artifact repository at once: ``MlflowClient.log_artifact`` loads the whole run back first (its
        params, tags and metrics) only to find that folder."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        run_id = self._id(run)
        uri = self.folders.get(run_id, "")
        if urllib.parse.urlsplit(uri).scheme == "file" and Path(path).is_file():
            get_artifact_repository(uri).log_artifact(path, folder)
        else:
            self.client.log_artifact(run_id, path, folder)

    def yaml(self, run: str, data: dict[str, Any], name: str) -> None:
        from omegaconf import OmegaConf

        self.text(run, OmegaConf.to_yaml(OmegaConf.create(data)), name)

    def heatmap(self, run: str, rows: list[dict], metric: str, mode: str) -> None:
        import tempfile

        from sweeps.tracking.plots import heatmap  # (scipy: not imported where no heatmap is drawn)

        with tempfile.TemporaryDirectory() as tmp:
            self._log_file(run, str(heatmap(rows, metric, mode, Path(tmp) / "heatmap.png")), None)

    def warm_pictures(self, storage: str | None = None) -> None:
        """Import what the pictures are drawn with (about 0.5 s of CPU), once, in a thread that answers
        nothing (``optuna_pictures.warm_aside``: the requests meanwhile are not held up), and open the
        study's journal file (``storage``): drawing them after the last trial then pays for neither, and
        Optuna reads only the journal's records since (a journal holds every study of its folder). A sweep
        asks for the imports as its store opens (while it imports torch and checks its configs), not once it
        trains: on 2 cores with 2 trial workers they held up every write of the first trials. A database URL
        is not held open for the sweep's length: ``optuna_plots`` connects then."""
        if self.client is None:  # the store never opened: the command is on its way out
            return
        if self._warming is None:
            self._warming = optuna_pictures.warm_aside()
        if storage and "://" not in storage:
            from sweeps.search.study import storage as open_storage

            with contextlib.suppress(Exception):  # optuna_plots opens it then, and says what is wrong
                self._journal = (storage, open_storage(storage))

    def optuna_plots(self, run: str, storage: str, study: str, params: list[str]) -> None:
        """The study's pictures (``optuna_pictures``) as PNG files on the run, in its ``optuna`` folder: drawn
        by processes of their own while this one goes on, on the run before it ends (``flush``)."""
        import tempfile

        folder = tempfile.TemporaryDirectory()
        if self._warming is not None:
            self._warming.join()  # (forks only from a process with one thread)
        drawing = optuna_pictures.start(self.study(storage, study), params, Path(folder.name))
        self._drawing.append((run, folder, drawing))

    def _pictures(self, run: str | None) -> list[Exception]:
        """The pictures being drawn for ``run`` (or for every run), on it once drawn; what the store
        refused."""
        errors = []
        for entry in [e for e in self._drawing if run is None or e[0] == run]:
            self._drawing.remove(entry)
            handle, folder, drawing = entry
            try:
                with folder:
                    for path in drawing.files():
                        self._log_file(handle, str(path), "optuna")
            except Exception as err:  # noqa: BLE001 - the held writes go on (``flush``)
                errors.append(err)
        return errors

    def study(self, storage: str, name: str) -> Any:
        """The study as its storage has it now (the journal ``warm_pictures`` opened, read up to date)."""
        import optuna

        from sweeps.search.study import storage as open_storage

        held = self._journal[1] if self._journal and self._journal[0] == storage else None
        return optuna.load_study(study_name=name, storage=held or open_storage(storage))

    def source_run(self, run_id: str, dest: str) -> dict[str, Any] | None:
        """A run's params and its best checkpoint artifact, downloaded into ``dest`` (for fine-tuning from
        it); None when the store has no such run, ``checkpoint`` None when the run logged none."""
        from mlflow.exceptions import MlflowException

        self.flush()
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        logged = {a.path for a in self.client.list_artifacts(run_id, "checkpoints")}
        path = "checkpoints/best.ckpt"
        checkpoint = self.client.download_artifacts(run_id, path, dest) if path in logged else None
        return {"params": dict(run.data.params), "checkpoint": checkpoint}

    def end_run(self, run: str, status: str) -> None:
        self.flush(run)
        if self._id(run) in self.monitors:
            self.monitors.pop(self._id(run)).finish()
        self.client.set_terminated(self._id(run), status)
        self.open_runs.discard(self._id(run))

    def reopen_run(self, run: str) -> None:
        """A sweep the same command resumes: its parent run RUNNING again, closed by this command."""
        run_id = self._id(run)
        self.client.update_run(run_id, status="RUNNING")
        self.open_runs.add(run_id)

    def abandon(self, runs: set[str] | None = None) -> None:
        """The process that owned ``runs`` (default: every run of ours) is gone: none may stay RUNNING."""
        runs = set(self.open_runs) if runs is None else runs & self.open_runs
        for run_id in runs & set(self.monitors):
            self.monitors.pop(run_id).finish()
        for run_id in runs:
            try:
                self._kill(run_id, "the training process ended without closing the run")
            except Exception:  # noqa: BLE001 - best effort while going down
                pass


def _store_lock(uri: str) -> Any:
    """An inter-process lock beside a SQLite store (a no-op for servers, which serialise this themselves)."""
    if uri.startswith("sqlite:///"):
        return FileLock(uri.removeprefix("sqlite:///") + ".lock", timeout=300)
    return contextlib.nullcontext()


def _probe(url: str) -> None:
    """Fail fast (one clear line) when a tracking server cannot be reached."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else parts.netloc
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    if parts.username is not None:
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - http(s) only, checked by the caller
    except urllib.error.HTTPError:
        return  # it answered: reachable
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConnectionError(f"cannot reach the tracking server ({reason})") from None
