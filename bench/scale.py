"""Scaling out on one machine: trials per minute with 1, 2 and 4 workers on the same PostgreSQL study, and
the share of trial time spent in storage and in sampling, side by side in one run.

Each worker is a process that opens the study as the sweeper does (``sweeps.search.study.open_study``),
claims trials with ``coordination.next_trial`` (advisory lock, heartbeats, stale check, Optuna's ask) and
tells them, and trains each trial in-process with ``sweeps.training.fit`` (digits, CPU-bound, one torch
thread per worker). Workers start together once all have imported torch and opened the study, so start-up
is not counted.

Sampling = the sampler's own computation (TPE), without the storage reads and writes it makes; storage =
everything else in claiming and telling (advisory lock, counts, stale check, Optuna's ask and tell with
their reads and writes). Both are also printed in ms per trial, which does not depend on the trial's
length, with the trial length at which that overhead is 2 %. A PostgreSQL server is started for the run
(``sweeps.services``) and stopped at the end.

    .venv/bin/python bench/scale.py                            # 200 trials, CNN, 40 epochs (about 3 s)
    .venv/bin/python bench/scale.py --model mlp --epochs 20    # trials of about 0.4 s
    .venv/bin/python bench/scale.py --trials 8 --epochs 1      # a quick check that it works
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(url: str, study_name: str, n_trials: int, model: str, epochs: int, go: Path) -> None:
    """One worker: claim, train, tell until the study has ``n_trials`` finished trials; print its timings."""
    import torch
    from hydra import compose, initialize_config_dir
    from optuna.distributions import FloatDistribution
    from optuna.samplers import TPESampler
    from optuna.trial import TrialState
    from sqlalchemy import event

    from sweeps.search import coordination
    from sweeps.search.study import open_study
    from sweeps.training.fit import fit, prepare

    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        base = compose(
            config_name="config",
            overrides=[
                f"model={model}",
                f"trainer.max_epochs={epochs}",
                "trainer.num_threads=1",
                "trainer.progress=none",
                "checkpoint=false",
                "early_stopping_patience=0",
                "tracking=off",
            ],
        )
    sampler = TPESampler(seed=0)
    distributions = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    ref = open_study(url, study_name, "max", sampler, None, heartbeat=(5, 60))
    # Time inside the sampler, and inside the storage while the sampler runs (TPE's reads of the trials and
    # the constant liar's writes): the difference is sampling, the rest of claim + tell is storage.
    clock = {"sampler": 0.0, "storage_in_sampler": 0.0, "in_sampler": False}
    for name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
        setattr(sampler, name, _timed(getattr(sampler, name), clock, "sampler", flag="in_sampler"))
    backend = ref.storage  # the RDBStorage (Optuna's cache in front of it calls it too)
    for name in dir(backend):
        method = getattr(backend, name)
        if inspect.ismethod(method) and not name.startswith("__"):
            setattr(backend, name, _timed(method, clock, "storage_in_sampler", only_if="in_sampler"))
    statements = [0]  # SQL statements of this loop through Optuna's storage (not the heartbeat thread's)

    def count(*_args: Any) -> None:
        statements[0] += threading.current_thread() is threading.main_thread()

    event.listen(backend.engine, "before_cursor_execute", count)
    sql_optuna = [0]  # of those, inside Optuna's own ask and tell: the rest is sweeplab's claim and release
    ref.study.ask = _counted(ref.study.ask, statements, sql_optuna)  # type: ignore[method-assign]
    prepare(base)  # the first build pays one-off costs (data loading, torch's first kernels)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
    claim_s = tell_s = train_s = 0.0
    done = 0
    while True:
        start = time.perf_counter()
        trial = coordination.next_trial(ref, distributions, n_trials, wait=False)
        claim_s += time.perf_counter() - start
        if trial is None:
            if coordination.counts(ref)[0] >= n_trials:
                break
            time.sleep(0.2)  # the last trials run in other workers: idle, not counted as storage
            continue
        start = time.perf_counter()
        cfg = base.copy()
        cfg.lr = trial.params["lr"]
        value = fit(cfg, prepare(cfg)).value
        train_s += time.perf_counter() - start
        start = time.perf_counter()
        _counted(ref.study.tell, statements, sql_optuna)(trial, value, state=TrialState.COMPLETE)
        coordination.release(ref, trial.number)
        tell_s += time.perf_counter() - start
        done += 1
    sample = clock["sampler"] - clock["storage_in_sampler"]
    result = {"trials": done, "claim": claim_s, "tell": tell_s, "train": train_s, "sample": sample}
    result["sql"], result["sql_optuna"] = statements[0], sql_optuna[0]
    print(json.dumps(result), flush=True)


def _counted(method: Callable[..., Any], statements: list[int], into: list[int]) -> Callable[..., Any]:
    """``method``, adding the SQL statements counted while it runs to ``into``."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        before = statements[0]
        try:
            return method(*args, **kwargs)
        finally:
            into[0] += statements[0] - before

    return counted


def _timed(
    method: Callable[..., Any], clock: dict[str, Any], key: str, flag: str = "", only_if: str = ""
) -> Callable[..., Any]:
    """``method``, adding its time to ``clock[key]`` (only while ``clock[only_if]``; the outermost call
    only, since storage methods call one another; not the heartbeat thread's), with ``clock[flag]`` set
    while it runs."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        skip = (only_if and not clock[only_if]) or clock.get(f"busy:{key}")
        if skip or threading.current_thread() is not threading.main_thread():
            return method(*args, **kwargs)
        clock[f"busy:{key}"] = True
        if flag:
            clock[flag] = True
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            clock[key] += time.perf_counter() - start
            clock[f"busy:{key}"] = False
            if flag:
                clock[flag] = False

    return timed


def measure(state, n_workers: int, n_trials: int, model: str, epochs: int, folder: Path) -> dict:
    """``n_workers`` workers on a new study in a new database: wall time and the summed timings."""
    from sweeps.launch import servers as services

    database = f"bench_{n_workers}_{time.time_ns()}"
    url = services.create_database(state, database)
    go = folder / f"go-{database}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, "scale", str(n_trials), model, str(epochs), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n_workers)
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"a worker failed to start (exit code {proc.wait()})")
    start = time.perf_counter()
    go.touch()
    totals = {"trials": 0, "claim": 0.0, "tell": 0.0, "train": 0.0, "sample": 0.0, "sql": 0, "sql_optuna": 0}
    for proc in procs:
        line = proc.stdout.readline()
        if proc.wait() != 0 or not line:
            raise SystemExit(f"a worker failed (exit code {proc.returncode})")
        for key, value in json.loads(line).items():
            totals[key] += value
    totals["wall"] = time.perf_counter() - start
    if totals["trials"] != n_trials:
        raise SystemExit(f"{n_workers} workers finished {totals['trials']} trials, not {n_trials}")
    return totals


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, name, n, model, epochs, go = sys.argv[2:8]
        worker(url, name, int(n), model, int(epochs), Path(go))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per study (default: %(default)s)")
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn", help="(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs per trial (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    from sweeps.launch import servers as services

    with tempfile.TemporaryDirectory(prefix="sweeplab-scale-") as tmp:
        folder = Path(tmp)
        state = services.start_postgres(folder / "services")
        try:
            rows = []
            for n in args.workers:
                print(f"{n} worker(s), {args.trials} trials of {args.epochs} epochs ...", flush=True)
                rows.append((n, measure(state, n, args.trials, args.model, args.epochs, folder)))
        finally:
            services.stop(folder / "services")
    model = {"cnn": "CNN", "mlp": "MLP"}[args.model]
    print(f"\nPostgreSQL study, {args.trials} trials, digits {model}, {args.epochs} epochs, 1 thread each")
    head = ("workers", "trials/min", "speed-up", "s/trial", "storage", "ms", "SQL", "ours", "sampling", "ms")
    head += ("2% at",)
    widths = (7, 10, 8, 7, 7, 5, 4, 4, 8, 5, 6)
    print("  ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    base = None
    for n, t in rows:
        per_minute = 60 * t["trials"] / t["wall"]
        base = base or per_minute
        trial_time = t["train"] + t["claim"] + t["tell"]
        storage = t["claim"] - t["sample"] + t["tell"]
        overhead_ms = 1000 * max(storage, t["sample"]) / t["trials"]
        print(
            f"{n:>7}  {per_minute:>10.1f}  {per_minute / base:>7.2f}x  {trial_time / t['trials']:>7.2f}"
            f"  {storage / trial_time:>7.2%}  {1000 * storage / t['trials']:>5.1f}"
            f"  {t['sql'] / t['trials']:>4.1f}  {(t['sql'] - t['sql_optuna']) / t['trials']:>4.1f}"
            f"  {t['sample'] / trial_time:>8.2%}  {1000 * t['sample'] / t['trials']:>5.1f}"
            f"  {overhead_ms / 20:>5.1f}s"
        )
    print("storage: claiming (lock, counts, stale check, Optuna's ask) and telling, without TPE's math;")
    print("sampling: TPE's math. Shares of the workers' summed trial time (claim + train + tell);")
    print("ms: per trial; SQL: statements per trial through Optuna's storage (the advisory lock adds 2);")
    print("ours: those outside Optuna's ask and tell (sweeplab's counts, stale check, owner, release);")
    print("2% at: the trial length at which the larger of storage and sampling is 2 % of it.")
    print("Goals on 2 cores: 2 workers >= 1.8x one worker; each share <= 2% at 200 trials.")


if __name__ == "__main__":
    main()
