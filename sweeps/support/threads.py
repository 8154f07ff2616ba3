"""Torch threads per process when a machine's cores are shared: by trial workers, by DDP ranks, or both.

torch starts as many intra-op and inter-op threads as the machine has cores in every process; with
``n_jobs`` workers each training on every core, the threads only wait on each other (measured on 2 cores:
a trial's training went from 0.3-0.4 s to 1.7-7 s with 2 workers). So each process that shares the cores
gets ``cores // parts`` threads, through the variable torch reads at start-up (``OMP_NUM_THREADS``, also
what Lightning's own DDP launcher sets, which it leaves alone once set) and ``torch.set_num_interop_threads``.
``SWEEPLAB_CORES`` carries a process's share to what it starts (a DDP trial in a worker splits the worker's
share among its ranks). An ``OMP_NUM_THREADS`` the user set is kept; ``trainer.num_threads`` still sets a
job's intra-op threads (``training.fit.prepare``).

A job trained in the command's own process (one trial at a time, or a single run) leaves one core to the
tracking process beside it (``beside_tracking``). That process writes every run and metric while the
training runs, and torch's intra-op threads wait at each op for the slowest of them: whenever the tracking
process held one of their cores, every thread waited. Measured on 2 cores (digits MLP, 12 trials): a trial's
training steps took 10-12 ms a call with 2 threads beside the tracking process, 6.5 ms with 1, and 6.2 ms
with 2 and tracking off.
"""

from __future__ import annotations

import os

ENV = "SWEEPLAB_CORES"  # the cores this process may use, set by the sweep that started it
OMP = "OMP_NUM_THREADS"


def cores() -> int:
    """The cores this process may use: its share from the sweep, else those it may run on."""
    if os.environ.get(ENV):
        return int(os.environ[ENV])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def user_set() -> bool:
    """Whether ``OMP_NUM_THREADS`` is the user's own (then every process keeps it)."""
    return OMP in os.environ and ENV not in os.environ


def share(parts: int) -> int:
    """Threads for each of ``parts`` processes sharing this process's cores."""
    return max(1, cores() // max(1, parts))


def environment(parts: int) -> dict[str, str]:
    """What to add to the environment of each of ``parts`` processes that share this one's cores."""
    if user_set():
        return {}
    threads = str(share(parts))
    return {OMP: threads, ENV: threads}


def beside_tracking(tracking_process: bool) -> int | None:
    """Intra-op threads for training in this process while a tracking process shares the machine: all cores
    but one. None (torch's count stays) without a tracking process, in a process given a share (a trial
    worker, a DDP rank) and where the user set ``OMP_NUM_THREADS``."""
    if not tracking_process or os.environ.get(ENV) or OMP in os.environ:
        return None
    return max(1, cores() - 1)


def describe_beside_tracking(count: int) -> str:
    """One log line: the threads ``beside_tracking`` gave."""
    return (
        f"{count} torch thread(s) on {cores()} cores, one left to the tracking process "
        "(trainer.num_threads or OMP_NUM_THREADS to choose)"
    )


def apply() -> int | None:
    """In a process given a share (``environment``): torch's intra- and inter-op threads to it, before any
    parallel work starts. Returns the count, None where there is no share to apply."""
    if not os.environ.get(ENV) or user_set():
        return None
    import torch

    threads = int(os.environ[ENV])
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # inter-op work already ran in this process: torch allows it only once, before
        pass
    return threads


def describe(parts: int, what: str) -> str:
    """One log line: how the cores are shared among ``parts`` processes."""
    if user_set():
        return f"{parts} {what}: OMP_NUM_THREADS={os.environ[OMP]} torch threads each (yours)"
    return (
        f"{parts} {what} on {cores()} cores: {share(parts)} torch thread(s) each, intra- and inter-op "
        "(trainer.num_threads or OMP_NUM_THREADS to choose)"
    )
