"""Ctrl-C (SIGINT), SIGTERM and SIGHUP stop a sweeplab command cleanly; a second one stops it at once.

The first signal is noted. While a run trains (inside ``deferred``) it stops at the next batch (``check``,
which the training callbacks call), so its MLflow run is closed KILLED and its trial told FAIL from a
consistent state; anywhere else ``Interrupted`` is raised at once. A second signal raises at once wherever
it lands: what can still be closed is closed on the way out, and the tracking process closes the rest when
this process is gone. The command's ``main`` turns ``Interrupted`` into one line and exit code 128 + the
signal number (``leave``).

Why not Python's ``KeyboardInterrupt``: Lightning's Trainer catches it, ignores every later Ctrl-C and
exits 1; ``Interrupted`` goes through Lightning's teardown and on up. It is not an ``Exception``, so the
job's policy closes the run KILLED and raises it again.

Helper processes (the tracking process, trial workers) must not take the terminal's Ctrl-C, which reaches
the whole foreground process group: they start with these signals blocked (``spawning``) and ignore them
(``helper``); their parent stops them.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REASON = "interrupted by the user"
# What a sweep sends a trial worker to stop it: the real-time signal SIGRTMIN + the signal that stopped the
# sweep (+ 0: it stopped for another reason), so that the worker's run says what the user did. Not that
# signal itself: the terminal's Ctrl-C reaches the worker too (it ignores the terminal's), and SIGTERM is a
# scheduler's "checkpoint and requeue" (``training.preemption``). No terminal sends a real-time signal.
STOP_CAUSES = (0, *SIGNALS)


class Interrupted(BaseException):
    """A stop signal reached this process; ``kept`` says what of the command's work stays (set on the way
    out by whoever knows), ``detail`` what the run left (a checkpoint)."""

    def __init__(self, signum: int, detail: str = "") -> None:
        """``signum`` 0: a trial worker whose sweep stopped it for a reason other than a signal."""
        super().__init__(f"{REASON} ({signal.Signals(signum).name})" if signum else "stopped by its sweep")
        self.signum, self.detail, self.kept = signum, detail, ""

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        """The one line a command prints for it."""
        name = "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name
        said = f"stopped by {name}" + (f" ({self.detail})" if self.detail else "")
        kept = self.kept or "what finished is kept; run the same command to resume"
        return f"{said}: {kept}"


class _State:
    noted: int | None = None  # the first signal, once one came
    deferred = 0  # how many trainings are running (each stops at its next batch)


def _handler(signum: int, frame: FrameType | None) -> None:
    if signum >= signal.SIGRTMIN:  # a trial worker told to stop (``stop_signal``): the sweep's cause
        signum -= signal.SIGRTMIN
    first = _State.noted is None
    if first:
        _State.noted = signum
        if _State.deferred:
            return  # the training stops at its next batch (``check``)
    raise Interrupted(signum if _State.noted is None else _State.noted)


def install(signals: tuple[int, ...] = SIGNALS) -> None:
    """This command stops on ``signals`` as the module says (main thread only)."""
    for sig in signals:
        signal.signal(sig, _handler)
    sys.unraisablehook = _unraisable


def _unraisable(unraisable: Any) -> None:
    """A stop raised while Python ran a destructor or a weakref callback is swallowed there, and Python would
    print its traceback: not printed. The signal is noted (``_State.noted``): the training running or the
    next one stops on it (``deferred``, ``check``)."""
    if isinstance(unraisable.exc_value, Interrupted):
        return
    sys.__unraisablehook__(unraisable)


def ours(handler: Any) -> bool:
    """Whether ``handler`` is this module's (a callback that replaced it hands over to it)."""
    return handler is _handler


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """While training: a first signal stops the run at its next batch, not where it lands."""
    _State.deferred += 1
    try:
        yield
    finally:
        _State.deferred -= 1
    if _State.noted is not None:  # it came after the last batch: stop here
        raise Interrupted(_State.noted)


def check() -> None:
    """At a batch's end: stop if a signal came meanwhile."""
    if _State.noted is not None and _State.deferred:
        raise Interrupted(_State.noted)


def leave(err: Interrupted) -> int:
    """The command's end after ``err``: later signals ignored, its one line; the exit code (128 + n)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    print(f"error: {err.line()}", file=sys.stderr, flush=True)
    return err.exit_code


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Around starting a helper process: it starts with the stop signals blocked (a signal mask is inherited
    across fork and exec), so a Ctrl-C during its start-up cannot print a traceback there."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def stop_signal() -> int:
    """The signal that tells a trial worker to stop now, naming what stopped this process (if a signal)."""
    return signal.SIGRTMIN + (_State.noted or 0)


def helper(stoppable: bool = False) -> None:
    """In a helper process, first thing: ignore the terminal's signals (its parent stops it). A
    ``stoppable`` one (a trial worker) takes ``stop_signal``'s signals from its parent as ``install`` says."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if stoppable:
        install(tuple(signal.SIGRTMIN + cause for cause in STOP_CAUSES))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
