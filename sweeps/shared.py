"""One Optuna study shared by many sweeper processes, on one machine or many (``hydra.sweeper.storage``).

What Optuna leaves to us when trials are run with ask/tell rather than ``study.optimize()``:

- Creation races: ``RDBStorage`` creates its tables and ``create_study(load_if_exists=True)`` its study
  with no lock, so workers starting at the same instant on an empty database fail with duplicate-key errors.
  ``lock`` serialises that (and each claim of a trial) with a PostgreSQL advisory lock, held on one
  connection per process (a file lock beside a journal or SQLite file). A lock rather than retrying the
  known errors: the errors differ by backend and by step (tables, alembic stamp, study row), a lock covers
  them all and costs one round trip.
- ``n_trials`` as a study total: ``next_trial`` counts finished and running trials under that lock, so the
  study never gets more than ``n_trials`` finished trials; a worker whose slot is taken waits while other
  workers' trials run, in case one of them fails and its trial must run again.
- Stale trials: heartbeats are only recorded inside ``optimize()``, so ``Heartbeat`` records them for the
  trials this process claimed; any worker fails a trial whose heartbeat is older than the grace period (or,
  on the same host, whose process is gone) and queues its parameters again.
- One MLflow parent run per study: the first worker creates it and keeps its id in a study attribute; the
  others join it; the last worker out (no trial left running) closes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeps.tracker_service import alive, process_start

log = logging.getLogger("sweeplab")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

_connections: dict[str, Any] = {}
_file_locks: dict[str, Any] = {}
_held: dict[str, int] = {}


def driver_url(url: str) -> str:
    """SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3; psycopg2 is the driver sweeplab installs."""
    return "postgresql+psycopg2://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url


def _key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"sweeplab:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def lock(url: str, name: str = "create") -> Iterator[None]:
    """Exclusive between processes (and machines, for PostgreSQL) for ``name``; re-entrant in a process."""
    ident = f"{url}|{name}"
    if _held.get(ident):
        _held[ident] += 1
        try:
            yield
        finally:
            _held[ident] -= 1
        return
    if url.startswith("postgresql"):
        conn = _pg_connection(url)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_key(name),))
        release: Callable[[], None] = lambda: _pg_unlock(conn, name)  # noqa: E731
    else:
        from filelock import FileLock

        path = url.split("///", 1)[1] if url.startswith("sqlite:///") else "" if "://" in url else url
        if not path or path == ":memory:":  # another database (MySQL, ...): its own row locks only
            release = lambda: None  # noqa: E731
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            file_lock = _file_locks.setdefault(ident, FileLock(f"{path}.{name}.lock", timeout=600))
            file_lock.acquire()
            release = file_lock.release
    _held[ident] = 1
    try:
        yield
    finally:
        _held[ident] = 0
        release()


def _pg_connection(url: str) -> Any:
    import psycopg2

    conn = _connections.get(url)
    if conn is None or conn.closed:
        conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
        conn.autocommit = True
        _connections[url] = conn
    return conn


def _pg_unlock(conn: Any, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", (_key(name),))


def rdb_storage(url: str, heartbeat: int | None, grace: int | None) -> Any:
    """``RDBStorage`` whose tables are created by one process at a time."""
    from optuna.storages import RDBStorage

    with lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            driver_url(url),
            heartbeat_interval=heartbeat,
            grace_period=grace,
            engine_kwargs={"pool_pre_ping": True},
        )


class Heartbeat:
    """Records a heartbeat every ``interval`` seconds for each trial this process runs (ask/tell gets none
    from Optuna). A daemon thread: it dies with the process, which is the point."""

    def __init__(self, storage: Any, interval: float) -> None:
        self.storage, self.interval = storage, interval
        self.trials: set[int] = set()
        self.guard = threading.Lock()
        threading.Thread(target=self._run, name="sweeplab-heartbeat", daemon=True).start()

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)  # at once: a trial without a heartbeat is never stale
        with self.guard:
            self.trials.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self.guard:
            self.trials.discard(trial_id)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self.guard:
                ids = list(self.trials)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # noqa: BLE001 - a database hiccup: try again next beat
                    log.warning("search: no heartbeat for trial %d: %s", trial_id, type(err).__name__)


_heartbeats: dict[int, Heartbeat] = {}
_last_stale_check: dict[str, float] = {}


def heartbeat_interval(storage: Any) -> int | None:
    """The storage's heartbeat interval (None: off, or a journal file). Studies wrap an RDBStorage in a
    cache that answers this too."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return storage.get_heartbeat_interval() if is_heartbeat_enabled(storage) else None


def heartbeat_for(storage: Any) -> Heartbeat | None:
    """This process's heartbeat thread for ``storage`` (None where heartbeats are off or unsupported)."""
    interval = heartbeat_interval(storage)
    if not interval:
        return None
    if id(storage) not in _heartbeats:
        _heartbeats[id(storage)] = Heartbeat(storage, interval)
    return _heartbeats[id(storage)]


def release(study: optuna.Study, trial_id: int) -> None:
    """The trial was told: no more heartbeats for it."""
    beat = _heartbeats.get(id(study._storage))
    if beat:
        beat.discard(trial_id)


def host() -> str:
    """This machine's name in trial records; ``SWEEPLAB_HOST`` overrides it where machines share a
    hostname (containers), since a trial of "this host" whose pid is not running here is failed at once."""
    return os.environ.get("SWEEPLAB_HOST") or socket.gethostname()


def claim(study: optuna.Study, trial: optuna.Trial) -> None:
    """Mark the trial as this process's (host, pid) and start its heartbeat."""
    owner = {"host": host(), "pid": os.getpid(), "start": process_start(os.getpid())}
    trial.set_user_attr("sweeplab.owner", owner)  # one write
    beat = heartbeat_for(study._storage)
    if beat:
        beat.add(trial._trial_id)


def recover_stale(
    study: optuna.Study, running: list[Any] | None = None, heartbeats: bool = True
) -> list[int]:
    """Fail the RUNNING trials whose worker is gone, and queue their parameters again.

    Gone: on this host, its process no longer runs; anywhere (``heartbeats``), its heartbeat is older than
    the grace period (RDB storage with heartbeats). A live trial elsewhere keeps beating, so it is never
    failed. ``running``: the study's RUNNING trials, if already read. Returns the numbers failed here.
    """
    storage = study._storage
    stale: set[int] = set()
    if heartbeats and heartbeat_interval(storage):
        stale.update(storage._get_stale_trial_ids(study._study_id))
    here = host()
    if running is None:
        running = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        owner = _owner(trial)
        if owner.get("host") == here and not alive(int(owner.get("pid") or 0), owner.get("start", "")):
            stale.add(trial._trial_id)
    failed = []
    for trial_id in sorted(stale):
        try:
            storage.set_trial_user_attr(trial_id, "sweeplab.reason", "its worker stopped (stale trial)")
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished (or another worker failed it) meanwhile
        trial = storage.get_trial(trial_id)
        study.enqueue_trial(trial.params, user_attrs={"sweeplab.retry_of": trial.number})
        failed.append(trial.number)
        log.warning(
            "search: trial %d was left by a stopped worker: failed, its parameters queued again", trial.number
        )
    return failed


def _owner(trial: Any) -> dict[str, Any]:
    """Who runs a trial: ``sweeplab.owner``, or the three attributes earlier versions wrote."""
    attrs = trial.user_attrs
    if "sweeplab.owner" in attrs:
        return attrs["sweeplab.owner"]
    return {
        "host": attrs.get("sweeplab.host"),
        "pid": attrs.get("sweeplab.pid"),
        "start": attrs.get("sweeplab.pid_start", ""),
    }


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials of the whole study."""
    finished, running = _states(study)
    return finished, len(running)


def _states(study: optuna.Study) -> tuple[int, list[Any]]:
    """The number of finished trials and the RUNNING trials, in one read of the storage."""
    trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
    return sum(t.state in FINISHED for t in trials), [t for t in trials if t.state == TrialState.RUNNING]


def next_trial(
    study: optuna.Study,
    url: str,
    distributions: dict[str, Any],
    n_trials: int,
    wait: bool = True,
    keep_going: Callable[[], bool] = lambda: True,
    on_stale: Callable[[list[int]], None] | None = None,
) -> optuna.Trial | None:
    """Claim the study's next trial, or None when the study has ``n_trials`` finished trials.

    While every remaining slot is held by a running trial (of any worker), wait (``wait``) and watch for
    stale ones, whose slots come free again; None at once if not ``wait`` or ``keep_going()`` turns False.
    """
    name = f"study:{study.study_name}"
    interval = float(heartbeat_interval(study._storage) or 2.0)
    poll = min(2.0, interval)
    while True:
        with lock(url, name):
            finished, running = _states(study)
            # Heartbeats are read at most once a heartbeat interval (or when no slot is free): a trial
            # becomes stale only after a grace period of several intervals anyway.
            now = time.monotonic()
            beats = finished + len(running) >= n_trials or now - _last_stale_check.get(name, 0) > interval
            if beats:
                _last_stale_check[name] = now
            stale = recover_stale(study, running, beats)
            if stale:
                finished, running = _states(study)
            trial = None
            if finished + len(running) < n_trials:
                with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize"
                    warnings.simplefilter("ignore", UserWarning)
                    trial = study.ask(distributions)
                claim(study, trial)
        if stale and on_stale:
            on_stale(stale)
        # Wait only where a running trial can be seen to die: heartbeats, or its process on this host.
        watchable = heartbeat_interval(study._storage) or any(
            _owner(t).get("host") == host() for t in running
        )
        if trial is not None or finished >= n_trials or not wait or not watchable or not keep_going():
            return trial
        time.sleep(poll)


def parent_key(tracking_uri: str) -> str:
    """The study attribute that holds the parent run of this study in this tracking store."""
    return "sweeplab.sweep_run." + hashlib.sha256(tracking_uri.encode()).hexdigest()[:10]


def join_or_start(study: optuna.Study, url: str, session: Any, start: Callable[[], str]) -> bool:
    """Join the study's open parent run, or start it (``start`` returns its run id). True if started."""
    key = parent_key(session.shown_uri)
    with lock(url, f"study:{study.study_name}"):
        attrs = study._storage.get_study_user_attrs(study._study_id)
        run_id = attrs.get(key)
        if run_id and attrs.get(key + ".closed") != run_id:
            session.join_sweep(run_id)
            return False
        run_id = start()
        study.set_user_attr(key, run_id)
        return True


def last_out(study: optuna.Study, url: str, session: Any) -> bool:
    """Whether this worker closes the shared parent run: no trial of the study runs any more and no other
    worker has closed it. Marks it closed."""
    key = parent_key(session.shown_uri)
    with lock(url, f"study:{study.study_name}"):
        recover_stale(study)
        if counts(study)[1]:
            return False
        attrs = study._storage.get_study_user_attrs(study._study_id)
        if attrs.get(key + ".closed") == session.sweep_id:
            return False
        study.set_user_attr(key + ".closed", session.sweep_id)
        return True


def study_rows(study: optuna.Study, own: list[Any]) -> list[Any]:
    """Leaderboard rows of every ended trial of the study: this worker's rows, and the others' from Optuna
    (their run ids are on their MLflow runs, tagged with the trial number)."""
    import math

    from sweeps.report import Row

    mine = {row.job: row for row in own}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.number in mine:
            rows.append(mine[t.number])
        elif t.state.is_finished():
            shown = {k: repr(v) if isinstance(v, float) else str(v) for k, v in t.params.items()}
            rows.append(
                Row(
                    t.number,
                    shown,
                    {"COMPLETE": "FINISHED"}.get(t.state.name, t.state.name),
                    t.value if t.state == TrialState.COMPLETE and t.value is not None else math.nan,
                    len(t.intermediate_values),
                    t.duration.total_seconds() if t.duration else 0.0,
                    str(t.user_attrs.get("sweeplab.reason", "")),
                )
            )
    return rows
