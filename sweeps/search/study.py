"""The persistent Optuna study of a search: its storage, created or resumed by name, with the sweep's
sampler and pruner.

``StudyRef`` keeps the storage object we built beside the study: Optuna keeps its own private, and the
coordination of several workers (``coordination``) needs the storage's public methods.
Why not the published ``hydra-optuna-sweeper``: it pins ``optuna<3`` and has neither pruning nor resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from optuna.distributions import CategoricalDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from sweeps.search import DEFAULT_STORAGE, journal, locks
from sweeps.search.locks import driver_url, lock
from sweeps.search.retry import DEFAULT_SECONDS, RetryingRDBStorage
from sweeps.search.space import Space
from sweeps.support import optuna_compat
from sweeps.support.errors import ConfigError
from sweeps.support.secrets import redact_text

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ENDED = (*FINISHED, TrialState.FAIL)  # and failed or stopped (interrupted): each has a leaderboard row
log = logging.getLogger("sweeplab")


class RequeueStale(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial failed as stale (its copy waits for the next ask), with the trial it
    retries as ``sweeplab.retry_of``; the numbers it retried are kept for ``taken()`` (their MLflow runs are
    closed by the caller)."""

    def __init__(self) -> None:
        with warnings.catch_warnings():  # "experimental": public since Optuna 2.8, and what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__()
        self.retried: list[int] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial.user_attrs = {**trial.user_attrs, "sweeplab.retry_of": trial.number}
        super().__call__(study, trial)
        self.retried.append(trial.number)

    def taken(self) -> list[int]:
        numbers, self.retried = self.retried, []
        return numbers


@dataclass
class StudyRef:
    """A study, the storage it was opened on (with its URL), and the ids of the trials this process holds."""

    study: optuna.Study
    storage: BaseStorage
    url: str
    requeue: RequeueStale = field(default_factory=RequeueStale)
    trial_ids: dict[int, int] = field(default_factory=dict)
    heartbeat: Any = None  # this process's heartbeat thread for its trials (``coordination.Heartbeat``)
    stale_checked: float = 0.0  # when this process last read the study's heartbeats (``time.monotonic``)

    def __post_init__(self) -> None:
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats (None: off, or a journal file)."""
        return self.storage.get_heartbeat_interval() if isinstance(self.storage, RDBStorage) else None

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (remembered for the trials this process claimed)."""
        if number not in self.trial_ids:
            self.trial_ids[number] = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, number
            )
        return self.trial_ids[number]

    def trial(self, number: int) -> optuna.Trial:
        """Trial ``number`` of the study, to report to and ask about (another process claimed it)."""
        return optuna_compat.trial(self.study, self.trial_id(number))

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """The study's trials, read from the storage (no copy)."""
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def finished(self) -> int:
        return len(self.trials(FINISHED))


def storage(
    url: str | None, heartbeat: int | None = None, grace: int | None = None, retry: float = DEFAULT_SECONDS
) -> BaseStorage:
    """A journal file by default (safe for several processes on one machine); any RDB URL otherwise, with
    heartbeats every ``heartbeat`` seconds (stale after ``grace``) so that workers elsewhere can tell a
    trial whose worker died (see ``coordination``), and calls that wait up to ``retry`` seconds for a
    database that went away (see ``retry``)."""
    url = url or DEFAULT_STORAGE
    journal.check(url)  # a damaged last record moved aside, damage before it refused (a URL: nothing to do)
    try:
        if "://" in url:
            return rdb_storage(url, heartbeat, grace, retry)
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        release_dangling_lock(journal_path(url))
        try:
            return JournalStorage(JournalFileBackend(journal_path(url)))
        except Exception:
            journal.check(url, thorough=True)  # a damaged record the quick check missed: its offset
            raise
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - SQLAlchemy and drivers raise many kinds
        raise _unreachable(url, err) from None


def journal_path(url: str) -> str:
    """The journal file, absolute: Optuna's lock is a symlink to this path, and a relative one would dangle
    (it resolves beside the link), so a lock left by a killed process would never be released."""
    return str(Path(url).resolve())


def release_dangling_lock(journal: str) -> None:
    """Remove a journal lock whose symlink points nowhere, saying so in one line.

    Optuna's ``JournalFileSymlinkLock`` releases a stale lock only after ``os.stat`` of it succeeds; on a
    dangling link (one left by a killed process of a version that gave a relative path, or made by hand)
    ``stat`` fails and its loop retries forever at full CPU. Every lock we take now points at the absolute
    journal, which exists while the lock is held, so a dangling one has no live holder.
    """
    link = Path(journal + ".lock")  # the name Optuna's lock gives: the journal's path plus ".lock"
    try:
        target = os.readlink(link)
    except OSError:  # no lock, or not a symlink
        return
    if not link.exists():
        with contextlib.suppress(FileNotFoundError):  # another process released it first
            link.unlink()
            log.warning(
                "released a stale journal lock %s (it pointed at %s, which does not exist)", link, target
            )


def rdb_storage(url: str, heartbeat: int | None, grace: int | None, retry: float) -> RDBStorage:
    """``RDBStorage`` whose tables are created by one process at a time; stale trials run again; a
    connection that died while idle is replaced (``pool_pre_ping``), a lost one retried (``retry``)."""
    with lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        opened = RetryingRDBStorage(
            driver_url(url),
            heartbeat_interval=heartbeat,
            grace_period=grace,
            heartbeat_stale_trial_callback=RequeueStale() if heartbeat else None,
            engine_kwargs={"pool_pre_ping": True},
        )
    opened.set_retry(url, retry)
    locks.retry_seconds[url] = retry
    return opened


def _unreachable(url: str, err: BaseException) -> ConfigError:
    reason = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
    return ConfigError(f"hydra.sweeper.storage={redact_text(url)} cannot be opened: {reason}")


def reference(study: optuna.Study, opened: BaseStorage, url: str) -> StudyRef:
    """``StudyRef`` of a study opened on ``opened``, sharing its retry callback where it has one."""
    callback = opened.get_heartbeat_stale_trial_callback() if isinstance(opened, RDBStorage) else None
    ref = StudyRef(study, opened, url)
    if isinstance(callback, RequeueStale):
        ref.requeue = callback
    return ref


def load(name: str, url: str | None, pruner: dict[str, Any] | None = None) -> StudyRef:
    """The sweep's study in another process (a trial worker, a DDP job's process, a report) with the sweep's
    pruner: a loaded study would otherwise decide with Optuna's default pruner. Raises KeyError if missing."""
    opened = storage(url)
    study = optuna.load_study(study_name=name, storage=opened, pruner=make("pruner", pruner, Space()))
    return reference(study, opened, url or DEFAULT_STORAGE)


def make(kind: str, node: dict[str, Any] | None, space: Space) -> Any:
    """The sampler or pruner from its config; a grid sampler gets the search space's choices."""
    if not node:
        return None
    node = dict(node)
    try:
        if str(node.get("_target_", "")).endswith("GridSampler"):
            grid = {}
            for key, dist in space.distributions.items():
                if not isinstance(dist, CategoricalDistribution):
                    raise ConfigError(f"hydra/sweeper/sampler=grid needs choice(...) or range(...) for {key}")
                grid[key] = list(dist.choices)
            node["search_space"] = grid
            node["_target_"] = "sweeps.search.grid.GridSampler"  # Optuna's stops the study: see grid.py
        return instantiate(node)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra wraps the sampler's own errors
        raise ConfigError(f"hydra.sweeper.{kind}: {str(err).splitlines()[0]}") from None


def continue_seeded(ref: StudyRef, node: dict[str, Any] | None, space: Space) -> None:
    """A seeded sampler continuing a study draws from ``seed + the trials the study holds``: with the seed
    as given, each command would start the sampler's random stream afresh and propose the first command's
    points again. The first command keeps the seed as given, so a search stays reproducible from scratch.
    (A database study shared by several commands has its sampler reseeded at random instead: ``open_study``.)
    """
    seed = (node or {}).get("seed")
    if seed is None or "://" in ref.url:
        return
    held = len(ref.study.get_trials(deepcopy=False))
    if held:
        ref.study.sampler = make("sampler", {**(node or {}), "seed": int(seed) + held}, space)


def open_study(
    url: str,
    name: str,
    direction: str,
    sampler: Any,
    pruner: Any,
    heartbeat: tuple[int, int] | None = None,
    retry: float = DEFAULT_SECONDS,
) -> StudyRef:
    """Create or load the study (one process at a time: see ``locks``). ``heartbeat`` is (interval,
    grace period) in seconds, for database storage; ``retry`` how long a database may stay away. The
    caller recovers the trials a dead process left."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    beat, grace = heartbeat if heartbeat and "://" in url else (None, None)
    try:
        with lock(url):
            opened = storage(url, beat, grace, retry)
            study = optuna.create_study(
                study_name=name,
                storage=opened,
                direction="maximize" if direction == "max" else "minimize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - the lock's connection: drivers raise many kinds
        raise _unreachable(url, err) from None
    if "://" in url:
        # Workers started with the same seed would sample the same first parameters: each gets its own
        # stream (Optuna does the same for its own parallel workers).
        study.sampler.reseed_rng()
    return reference(study, opened, url)
