"""A database that goes away for a while (PostgreSQL restarted, a network blip): storage calls wait and
retry with a bounded back-off, and give up with one line after ``hydra.sweeper.storage_retry_seconds``.

Why a loop here: SQLAlchemy's ``pool_pre_ping`` (set on the engine) replaces a connection that died while
idle in the pool, but a call that meets a server going down, or a server not yet back, still raises
``OperationalError``; Optuna's ``RDBStorage`` retries nothing (it wraps the error as
``StorageInternalError``), and its heartbeat only fails trials of dead workers. Each storage method is one
transaction, rolled back when the connection drops, so calling it again is safe; the two ambiguous cases
(the commit reached the server but its answer did not) are handled where they matter: see ``_again``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage

from sweeps.support import optuna_compat
from sweeps.support.secrets import redact_text

log = logging.getLogger("sweeplab")
T = TypeVar("T")
DEFAULT_SECONDS = 60.0
BACKOFF = (0.5, 1.0, 2.0, 4.0)  # then every 5 s: a restarted server is seen within 5 s of answering
_state = threading.local()


class DatabaseAway(Exception):
    """The database did not answer within the retry time: the sweep stops with this one line."""

    def __init__(self, url: str, seconds: float, err: BaseException) -> None:
        cause = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
        super().__init__(
            f"the database {redact_text(url)} did not answer for {seconds:g} s "
            f"(hydra.sweeper.storage_retry_seconds) ({cause}): the sweep stopped; its finished trials are "
            "kept; run the same command to resume once the database is back"
        )


def connection_lost(err: BaseException | None) -> BaseException | None:
    """The lost or refused database connection behind ``err`` (Optuna wraps it), or None."""
    import psycopg
    from sqlalchemy import exc

    while err is not None:
        if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
            return err.orig or err
        if isinstance(err, exc.OperationalError | exc.InterfaceError):
            return err.orig or err
        if isinstance(err, psycopg.OperationalError):
            return err
        if isinstance(err, psycopg.InterfaceError) and "closed" in str(err):
            return err
        err = err.__cause__ or err.__context__
    return None


class Retry:
    """The back-off of one database: ``call`` runs a function until it works, the database answers no
    more within ``seconds``, or an earlier call of this process gave up on this database (then at once: the
    sweep is going down, and its clean-up should not wait the whole time again)."""

    gave_up: dict[str, DatabaseAway] = {}  # noqa: RUF012 - per process, shared by every Retry of a URL

    def __init__(self, url: str, seconds: float = DEFAULT_SECONDS) -> None:
        self.url, self.seconds = url, seconds

    def call(self, what: str, fn: Callable[[], T], again: Callable[[BaseException], T] | None = None) -> T:
        if self.url in Retry.gave_up:
            raise Retry.gave_up[self.url]
        deadline, attempt = time.monotonic() + self.seconds, 0
        while True:
            try:
                return fn() if attempt == 0 or again is None else _or_again(fn, again)
            except Exception as err:
                lost = connection_lost(err)
                if lost is None:
                    raise
                wait = BACKOFF[attempt] if attempt < len(BACKOFF) else 5.0
                if time.monotonic() + wait > deadline:
                    Retry.gave_up[self.url] = DatabaseAway(self.url, self.seconds, lost)
                    raise Retry.gave_up[self.url] from None
                if attempt == 0:
                    log.warning("search: the database did not answer (%s): retrying", what)
                attempt += 1
                time.sleep(wait)


def _or_again(fn: Callable[[], T], again: Callable[[BaseException], T]) -> T:
    try:
        return fn()
    except UpdateFinishedTrialError as err:
        return again(err)


class RetryingRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` whose public methods retry while the database is away (see the module)."""

    retry: Retry

    def set_retry(self, url: str, seconds: float) -> None:
        self.retry = Retry(url, seconds)


def _retrying(name: str) -> Callable[..., Any]:
    """``RDBStorage``'s method ``name``, retried (one retry loop per call: not its inner storage calls)."""
    plain = getattr(RDBStorage, name)

    @functools.wraps(plain)
    def method(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        if getattr(_state, "inside", False) or not hasattr(self, "retry"):  # one retry loop per call
            return plain(self, *args, **kwargs)
        _state.inside = True
        try:
            again = _told(self, args, kwargs) if name == "set_trial_state_values" else None
            return self.retry.call(name, lambda: plain(self, *args, **kwargs), again)
        finally:
            _state.inside = False

    return method


def _told(storage: RDBStorage, args: tuple, kwargs: dict) -> Callable[[BaseException], bool]:
    """A tell retried after its commit reached the server but not its answer finds the trial finished:
    done if it holds the state we asked for, else someone else's (the error stands)."""
    trial_id, state = args[0], kwargs.get("state", args[1] if len(args) > 1 else None)

    def again(err: BaseException) -> bool:
        if storage.get_trial(trial_id).state == state:
            return True
        raise err

    return again


_NO_DATABASE = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "is_heartbeat_enabled"}
for _name in dir(RDBStorage):
    if not _name.startswith("_") and _name not in _NO_DATABASE and callable(getattr(RDBStorage, _name)):
        setattr(RetryingRDBStorage, _name, _retrying(_name))
# The study's own cache of our storage calls some private methods directly: those retry too.
optuna_compat.override_cache_calls(RetryingRDBStorage, _retrying)
