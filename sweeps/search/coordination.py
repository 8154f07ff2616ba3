"""One Optuna study shared by many sweeper processes, on one machine or many (``hydra.sweeper.storage``).

What Optuna leaves to us when trials are run with ask/tell rather than ``study.optimize()``:

- ``n_trials`` as a study total: ``next_trial`` counts finished and running trials under a lock (``locks``),
  so the study never gets more than ``n_trials`` finished trials; a worker whose slot is taken waits while
  other workers' trials run, in case one of them fails and its trial must run again.
- Stale trials: heartbeats are only recorded inside ``optimize()``, so ``Heartbeat`` records them for the
  trials this process claimed. Optuna's ``fail_stale_trials`` fails a trial whose heartbeat is older than
  the grace period and its ``RetryHeartbeatStaleTrialCallback`` queues it again; Optuna has no check of
  its own for a dead process on this host, so ``recover_stale`` adds one (no need to wait out the grace
  period, and it works on a journal file, which has no heartbeats).
- One MLflow parent run per study: the first worker creates it and keeps its id in a study attribute; the
  others join it; the last worker out (no trial left running) closes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from sweeps.search.locks import lock
from sweeps.search.study import FINISHED, StudyRef
from sweeps.support.processes import alive, host, process_start

log = logging.getLogger("sweeplab")
STALE = "its worker stopped (stale trial)"


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


def heartbeat_for(ref: StudyRef) -> Heartbeat | None:
    """This process's heartbeat thread for the study's storage (None where heartbeats are off)."""
    interval = ref.heartbeat_interval
    if not interval:
        return None
    if ref.heartbeat is None:
        ref.heartbeat = Heartbeat(ref.storage, interval)
    return ref.heartbeat


def claim(ref: StudyRef, trial: optuna.Trial) -> None:
    """Mark the trial as this process's (host, pid) and start its heartbeat."""
    owner = {"host": host(), "pid": os.getpid(), "start": process_start(os.getpid())}
    trial.set_user_attr("sweeplab.owner", owner)  # one write
    beat = heartbeat_for(ref)
    if beat:
        beat.add(ref.trial_id(trial.number))


def release(ref: StudyRef, number: int) -> None:
    """The trial was told: no more heartbeats for it."""
    beat = ref.heartbeat
    if beat:
        beat.discard(ref.trial_id(number))
    ref.trial_ids.pop(number, None)


def recover_stale(
    ref: StudyRef, running: list[FrozenTrial] | None = None, heartbeats: bool = True
) -> list[int]:
    """Fail the RUNNING trials whose worker is gone, and queue their parameters again. The caller holds the
    study's lock (``lock(ref.url, f"study:{ref.name}")``).

    Gone: on this host, its process no longer runs; anywhere (``heartbeats``), its heartbeat is older than
    the grace period (Optuna's check: RDB storage with heartbeats). A live trial elsewhere keeps beating, so
    it is never failed. ``running``: the study's RUNNING trials, if already read. Returns the numbers.
    """
    if heartbeats and ref.heartbeat_interval:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and public
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(ref.study)
    here = host()
    for trial in ref.trials((TrialState.RUNNING,)) if running is None else running:
        owner = _owner(trial)
        # No owner: asked, and its process died before it could claim it. Ask and claim happen under the
        # study's lock, which every caller of this function holds, so no live process is in between.
        unclaimed = not owner.get("pid")
        if unclaimed or (owner.get("host") == here and not alive(int(owner["pid"]), owner.get("start", ""))):
            _fail_dead(ref, trial)
    failed = ref.requeue.taken()
    for number in failed:
        log.warning(
            "search: trial %d was left by a stopped worker: failed, its parameters queued again", number
        )
    return sorted(failed)


def _fail_dead(ref: StudyRef, trial: FrozenTrial) -> None:
    """Fail a trial whose process on this host is gone, with the reason, and queue it as Optuna would."""
    trial_id = ref.storage.get_trial_id_from_study_id_trial_number(ref.study_id, trial.number)
    try:
        ref.storage.set_trial_user_attr(trial_id, "sweeplab.reason", STALE)
        if not ref.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # it finished (or another worker failed it) meanwhile
    ref.requeue(ref.study, ref.storage.get_trial(trial_id))


def _owner(trial: FrozenTrial) -> dict[str, Any]:
    """Who runs a trial: ``sweeplab.owner``, or the three attributes earlier versions wrote."""
    attrs = trial.user_attrs
    if "sweeplab.owner" in attrs:
        return attrs["sweeplab.owner"]
    return {
        "host": attrs.get("sweeplab.host"),
        "pid": attrs.get("sweeplab.pid"),
        "start": attrs.get("sweeplab.pid_start", ""),
    }


def counts(ref: StudyRef) -> tuple[int, int]:
    """(finished, running) trials of the whole study."""
    finished, running = _states(ref)
    return finished, len(running)


def _states(ref: StudyRef) -> tuple[int, list[FrozenTrial]]:
    """The number of finished trials and the RUNNING trials, in one read of the storage."""
    trials = ref.trials()
    return sum(t.state in FINISHED for t in trials), [t for t in trials if t.state == TrialState.RUNNING]


def _ask(
    ref: StudyRef, distributions: dict[str, Any], n_trials: int, name: str
) -> tuple[Any, list[int], int, list[FrozenTrial]]:
    """Under the study's lock: recover stale trials, then ask for a trial if a slot is free.

    Returns (the trial or None, the numbers failed as stale, the finished count, the RUNNING trials).
    """
    finished, running = _states(ref)
    # Heartbeats are read at most once a heartbeat interval (or when no slot is free): a trial becomes
    # stale only after a grace period of several intervals anyway.
    now, interval = time.monotonic(), float(ref.heartbeat_interval or 2.0)
    beats = finished + len(running) >= n_trials or now - ref.stale_checked > interval
    if beats:
        ref.stale_checked = now
    stale = recover_stale(ref, running, beats)
    if stale:
        finished, running = _states(ref)
    trial = None
    if finished + len(running) < n_trials:
        with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize"
            warnings.simplefilter("ignore", UserWarning)
            trial = ref.study.ask(distributions)
        claim(ref, trial)
    return trial, stale, finished, running


def next_trial(
    ref: StudyRef,
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
    name = f"study:{ref.name}"
    poll = min(2.0, float(ref.heartbeat_interval or 2.0))
    while True:
        with lock(ref.url, name):
            trial, stale, finished, running = _ask(ref, distributions, n_trials, name)
        if stale and on_stale:
            on_stale(stale)
        # Wait only where a running trial can be seen to die: heartbeats, or its process on this host.
        watchable = ref.heartbeat_interval or any(_owner(t).get("host") == host() for t in running)
        if trial is not None or finished >= n_trials or not wait or not watchable or not keep_going():
            return trial
        time.sleep(poll)


def parent_key(tracking_uri: str) -> str:
    """The study attribute that holds the parent run of this study in this tracking store."""
    return "sweeplab.sweep_run." + hashlib.sha256(tracking_uri.encode()).hexdigest()[:10]


def join_or_start(ref: StudyRef, session: Any, start: Callable[[], str]) -> bool:
    """Join the study's open parent run, or start it (``start`` returns its run id). True if started."""
    key = parent_key(session.shown_uri)
    with lock(ref.url, f"study:{ref.name}"):
        attrs = ref.storage.get_study_user_attrs(ref.study_id)
        run_id = attrs.get(key)
        if run_id and attrs.get(key + ".closed") != run_id:
            session.join_sweep(run_id)
            return False
        run_id = start()
        ref.study.set_user_attr(key, run_id)
        return True


def last_out(ref: StudyRef, session: Any) -> bool:
    """Whether this worker closes the shared parent run: no trial of the study runs any more and no other
    worker has closed it. Marks it closed."""
    key = parent_key(session.shown_uri)
    with lock(ref.url, f"study:{ref.name}"):
        recover_stale(ref)
        if counts(ref)[1]:
            return False
        attrs = ref.storage.get_study_user_attrs(ref.study_id)
        if attrs.get(key + ".closed") == session.sweep_id:
            return False
        ref.study.set_user_attr(key + ".closed", session.sweep_id)
        return True
