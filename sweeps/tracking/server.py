"""The tracking process: ``python -m sweeps.tracking.server FD``, one per command, answering ``session``.

Why a process of its own: importing MLflow and opening a store costs 2-3 s on these machines, and each
write several milliseconds. In a separate process that work overlaps the torch import and the training
instead of adding to them. It also outlives a crash of the training process long enough to close its runs:
when the pipe to its parent breaks, every run still open is ended as KILLED.

A sweep's trial workers write through the same process (one MLflow import and one store for the command,
not one per worker: on 2 cores, three imports at once delayed every worker's first trial): the parent hands
it each worker's socket (``Session.attach``), and when that socket closes (the worker ended or died), the
runs the worker left open are ended as KILLED.

Requests arrive as ``(name, kwargs, reply)`` tuples, ``name`` one of ``requests.REQUESTS`` (any other is
refused, never looked up on the store); those sent with ``reply=True`` get ``("ok", value)`` or
``("error", message)`` back.
"""

from __future__ import annotations

import contextlib
import os
import sys
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recv_handle
from typing import Any

from sweeps.support import fulldisk, interrupt, startup_gc
from sweeps.support.secrets import redact_text
from sweeps.tracking.requests import ATTACH, CLOSE, DETACH, NICENESS, REQUESTS, RESOLVE, refused
from sweeps.tracking.store import Store


def answer_requests(conn: Connection) -> None:
    """Answer requests until the parent says ``close`` or goes away; meanwhile answer the trial workers
    the parent attached too (``ATTACH``: each on its own socket, its runs closed KILLED if it dies)."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run at ..." lines
    # No usage reports leave the machine (and none hold up the exit trying to reach a server).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    fulldisk.quiet()
    service: Store | None = None
    full = ""  # the first write refused for want of space: the reply to ``close`` tells the parent
    workers: dict[Connection, set[str]] = {}  # an attached worker's socket -> the runs it started
    while True:
        if service is not None and service.pending and (service.due() or not wait([conn, *workers], 0.25)):
            full = full or _flush(service)  # the callers went quiet, or metrics waited long enough
        readable = wait([conn, *workers])
        full = _worker_requests(readable, workers, service, full)
        if conn not in readable:
            continue
        try:
            name, kwargs, reply = conn.recv()
        except (EOFError, OSError):
            if service is not None and service.client is not None:
                _flush(service)
                service.abandon()
            return
        if name == CLOSE:
            if service is not None and service.client is not None:
                full = full or _flush(service)
                for runs in workers.values():  # a worker still attached will not close them now
                    service.abandon(runs)
            conn.send(("ok", full or None))
            return
        if name == ATTACH:
            workers[Connection(recv_handle(conn))] = set()
            continue
        if name == RESOLVE:  # a worker's runs, once it reported them to the sweep, are known to the sweep
            full = _drain(workers, service, full)
        try:
            if service is None:
                service = Store()
                startup_gc.resume()
        except Exception as err:  # noqa: BLE001 - MLflow that cannot be imported: the parent says it
            answer: Any = ("error", f"{type(err).__name__}: {err}".splitlines()[0])
        else:
            answer, full = _answer(service, name, kwargs, reply, full)
        if reply:
            _reply(conn, answer)  # the parent gone: the next recv() ends the loop


def _worker_request(
    source: Connection, workers: dict[Connection, set[str]], service: Store | None, full: str
) -> str:
    """One request of an attached worker. Its socket closing (it ended, or died: SIGKILL, out of memory)
    or its ``DETACH`` ends its runs still open as KILLED; other requests are the parent's kind. Returns the
    full disk's error, as ``_answer`` (the parent's ``close`` says it for the whole sweep)."""
    try:
        name, kwargs, reply = source.recv()
    except (EOFError, OSError):
        name, kwargs, reply = DETACH, {}, False
    if name == DETACH:
        if service is not None and service.client is not None:
            full = full or _flush(service)
            service.abandon(workers[source])
        workers.pop(source)
        if reply:
            _reply(source, ("ok", None))
        source.close()
        return full
    if service is None:  # a worker is attached once the store is open (``Workers.begin``)
        answer: Any = ("error", "RuntimeError: the tracking store is not open")
    else:
        answer, full = _answer(service, name, kwargs, reply, full)
    if name == "start_run" and answer[0] == "ok":
        workers[source].add(answer[1])  # its run id
    if reply:
        _reply(source, answer)
    return full


def _drain(workers: dict[Connection, set[str]], service: Store | None, full: str) -> str:
    """Every request the attached workers have sent so far. A worker sends its trial's outcome (with its run
    handles) to the sweep after its writes, so once drained, the sweep's ``resolve`` knows those runs, and
    they are closed: no worker waits for its own writes (a round trip behind every queued write of the
    sweep) before it takes its next trial."""
    while readable := wait(list(workers), 0):
        full = _worker_requests(readable, workers, service, full)
    return full


def _worker_requests(
    readable: list[Any], workers: dict[Connection, set[str]], service: Store | None, full: str
) -> str:
    """One request of each attached worker whose socket is ``readable`` (``_worker_request``)."""
    for source in [c for c in workers if c in readable]:
        full = _worker_request(source, workers, service, full)
    return full


def _reply(conn: Connection, answer: Any) -> None:
    """Send an answer; a caller that is gone is seen at its socket's next read (EOF), not here."""
    with contextlib.suppress(OSError):
        conn.send(answer)


def _answer(service: Store, name: str, kwargs: dict[str, Any], reply: bool, full: str) -> tuple[Any, str]:
    """The answer to one request, and the full disk's error if this write was the first refused."""
    try:
        return ("ok", handle(service, name, kwargs)), full
    except Exception as err:  # noqa: BLE001 - reported to the caller, which decides
        answer = ("error", f"{type(err).__name__}: {err}".splitlines()[0])
        if not reply and fulldisk.is_full(err):
            full = full or _full(err)
        elif not reply and not full:  # after a full disk, what fails is its consequence: no more lines
            print(f"tracking: {redact_text(answer[1])}", file=sys.stderr, flush=True)
        return answer, full


def handle(service: Store, name: str, kwargs: dict[str, Any]) -> Any:
    """One request on the store; a name outside the allow-list is refused, never looked up on it."""
    if name not in REQUESTS:
        raise ValueError(refused(name))
    return getattr(service, name)(**kwargs)


def _flush(service: Store) -> str:
    """Write the held-back writes; a store that refuses them costs one line, not the process (which must
    stay to close the runs: the next command reaps what it cannot). Returns the full disk's error, if that
    was it (then the parent's line says it, and this process says nothing)."""
    try:
        service.flush()
    except Exception as err:  # noqa: BLE001 - SQLAlchemy, HTTP and OS errors alike
        if fulldisk.is_full(err):
            return _full(err)
        said = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
        print(f"tracking: {said}", file=sys.stderr, flush=True)
    return ""


def _full(err: BaseException) -> str:
    """The line of a full disk's error that says so (SQLAlchemy's first line is often about autoflush)."""
    text = f"{type(err).__name__}: {err}"
    said = next((line for line in text.splitlines() if any(w in line for w in fulldisk.FULL_WORDS)), "")
    return redact_text(said or text.splitlines()[0])


if __name__ == "__main__":
    startup_gc.pause()  # resumed once MLflow is imported and the store open
    interrupt.helper()  # its parent closes it, after closing the runs
    os.nice(int(os.environ.get(NICENESS, "5")))  # (``requests.NICENESS``)
    answer_requests(Connection(int(sys.argv[1])))  # the socket the parent passed (``session.Session``)
