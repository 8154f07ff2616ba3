"""Wall time of the default sweep with MLflow tracking on against tracking off, side by side.

Each round runs the README's default sweep (``python -m sweeps.run -m optimizer=adam,sgd``) as a user does,
a fresh process each time, once with ``tracking=local`` (the SQLite store under mlruns/) and once with
``tracking=off``, once with ``tracking=local`` in a new folder (the run that creates the store), once with
``tracking.log_model=true`` (each run's best checkpoint logged as an MLflow model), and once with
``tracking=local`` written by MLflow's own asynchronous logging in the training process instead of by our
tracking process (``MlflowAsync``: the same requests on the same ``Store``, but metrics, params and tags go
through ``MlflowClient.log_batch(synchronous=False)``, and MLflow is imported and the store opened in the
training process), the five alternating so that machine noise hits all of them; the medians are compared.
One tracked run first warms up (imports, disk caches) and is not counted.

    .venv/bin/python bench/tracking.py [--rounds 9] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "optimizer=adam,sgd"]
ASYNC = "--mlflow-async-sweep"  # this file, run as the sweep whose writes MLflow's async logging makes


def run(
    folder: Path, tracking: str, extra: list[str], log_model: bool = False, mlflow_async: bool = False
) -> float:
    models = ["tracking.log_model=true"] if log_model else []
    how = [str(Path(__file__).resolve()), ASYNC] if mlflow_async else ["-m", "sweeps.run"]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *how, *SWEEP, f"tracking={tracking}", *models, *extra],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"sweep failed ({tracking}{', MLflow async' if mlflow_async else ''}):\n{proc.stderr[-2000:]}"
        )
    return seconds


def mlflow_async_sweep(arguments: list[str]) -> None:
    """``python -m sweeps.run ARGUMENTS`` with the session's tracking process replaced by a ``Store`` in this
    process whose metrics, params and tags go through MLflow's async logging (``MlflowAsync``)."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # as the tracking process sets
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from sweeps.tracking import session

    session.spawn = lambda module, env=None: (Here(), MlflowAsync())
    sys.argv = [str(ROOT / "sweeps" / "run.py"), *arguments]
    sys.path[0] = ""  # the working folder first, as ``python -m`` has it (not bench/, whose names may shadow)
    runpy.run_module("sweeps.run", run_name="__main__", alter_sys=True)


class Here:
    """The "tracking process" of ``MlflowAsync``: this process, which nothing needs to stop."""

    pid = os.getpid()

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


class MlflowAsync:
    """The session's pipe with the store at its far end, in this process: each request runs as it is sent
    (through the server's allow-list), the store's metrics, params and tags through MLflow's async queue.
    MLflow's ``set_terminated`` (``end_run``) waits for the queue, as our tracking process's ``end_run``
    writes a run's held-back metrics first."""

    def __init__(self) -> None:
        from sweeps.tracking.server import handle
        from sweeps.tracking.store import Store

        class AsyncStore(Store):
            def log(self, run: str, metrics: Any = None, step: int = 0, **named: Any) -> None:
                """Params and tags as the store writes them; metrics at once, on MLflow's async queue."""
                from mlflow.entities import Metric

                if named.get("params") or named.get("tags"):
                    super().log(run, **named)
                if metrics:
                    now = int(time.time() * 1000)
                    values = [Metric(k, float(v), now, step) for k, v in metrics.items()]
                    self.client.log_batch(self._id(run), metrics=values, synchronous=False)

        self.handle = handle
        self.store = AsyncStore()
        self.answers: list[tuple[str, Any]] = []

    def send(self, message: tuple[str, dict[str, Any], bool]) -> None:
        name, kwargs, reply = message
        try:
            answer = ("ok", None if name == "close" else self.handle(self.store, name, kwargs))
        except Exception as err:  # noqa: BLE001 - answered, as the tracking process answers
            answer = ("error", f"{type(err).__name__}: {err}".splitlines()[0])
            if not reply:
                print(f"tracking: {answer[1]}", file=sys.stderr, flush=True)
        if reply:
            self.answers.append(answer)

    def recv(self) -> tuple[str, Any]:
        return self.answers.pop(0)

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)  # the README's table: 9 rounds
    parser.add_argument("extra", nargs="*", help="overrides added to both sweeps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run(folder, "local", args.extra)  # warm-up; it also creates the store the "existing store" arm uses
        off, on, new, model, mlflow_async = [], [], [], [], []
        for i in range(args.rounds):
            off.append(run(folder, "off", args.extra))
            on.append(run(folder, "local", args.extra))
            fresh = Path(tmp) / f"new-{i}"
            fresh.mkdir()
            new.append(run(fresh, "local", args.extra))
            model.append(run(folder, "local", args.extra, log_model=True))
            mlflow_async.append(run(folder, "local", args.extra, mlflow_async=True))
    t_off, t_on, t_new, t_model, t_async = (statistics.median(v) for v in (off, on, new, model, mlflow_async))
    print(f"default sweep ({' '.join(SWEEP + args.extra)}), {args.rounds} alternating rounds, medians:")
    print(f"  tracking off                   {t_off:7.2f} s")
    print(f"  tracking on (existing store)   {t_on:7.2f} s   ratio {t_on / t_off:.3f}")
    print(f"  tracking on (new store)        {t_new:7.2f} s   ratio {t_new / t_off:.3f}")
    ratios = f"ratio {t_model / t_off:.3f} (to tracking on: {t_model / t_on:.3f})"
    print(f"  tracking on + log_model        {t_model:7.2f} s   {ratios}")
    ratios = f"ratio {t_async / t_off:.3f} (to tracking on: {t_async / t_on:.3f})"
    print(f"  MLflow async, in training      {t_async:7.2f} s   {ratios}")
    arms = (
        ("off", off),
        ("on", on),
        ("new store", new),
        ("log_model", model),
        ("MLflow async", mlflow_async),
    )
    for name, times in arms:
        print(f"  (each round, {name}: {' '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    if sys.argv[1:2] == [ASYNC]:
        mlflow_async_sweep(sys.argv[2:])
    else:
        main()
