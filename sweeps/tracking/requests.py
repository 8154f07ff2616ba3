"""The requests the tracking process answers: the names of the ``Store`` methods that ``session.Session``
may ask for, and nothing else (the server refuses any other name rather than calling it)."""

from __future__ import annotations

# Sent and not waited for: the tracking process works through them while training goes on.
FIRE_AND_FORGET = frozenset(
    {
        "start_run",
        "log",
        "text",
        "yaml",
        "artifact",
        "model",
        "datasets",
        "heatmap",
        "optuna_plots",
        "warm_pictures",
        "end_run",
        "reopen_run",
        "kill_trial_runs",
    }
)
# Answered: the caller waits for the value (or the store's error).
RESOLVE = "resolve"  # answered once every attached worker's requests sent so far are done
ANSWERED = frozenset({"open", RESOLVE, "register", "source_run", "trial_runs"})
REQUESTS = FIRE_AND_FORGET | ANSWERED
CLOSE = "close"  # not a Store method: the server flushes, answers and stops
ATTACH = "attach"  # not a Store method: a trial worker's socket follows (``Session.attach``)
DETACH = "detach"  # from an attached worker: its writes are done; runs it left open are ended KILLED

# The tracking process's niceness, from its parent: 5 (training comes first where the two share a core)
# unless it serves trial workers, whose runs it must keep up with (niced beside two workers on 2 cores,
# it ended the search 4 runs behind: 0.15 s more after the last trial).
NICENESS = "SWEEPLAB_TRACKING_NICENESS"


def refused(name: str) -> str:
    """The error for a name outside the list (the same words on both sides of the pipe)."""
    return f"no such tracking request: {name!r} (allowed: {', '.join(sorted(REQUESTS))})"
