"""Wall time of the default sweep with MLflow tracking on against tracking off, side by side.

Each round runs the README's default sweep (``python -m sweeps.run -m optimizer=adam,sgd``) as a user does,
a fresh process each time, once with ``tracking=local`` (the SQLite store under mlruns/) and once with
``tracking=off``, and once with ``tracking.log_model=true`` (each run's best checkpoint logged as an MLflow
model), alternating so that machine noise hits all three; the medians are compared. The first tracked run
also creates the store, and is reported on its own.

    .venv/bin/python bench/tracking.py [--rounds 5] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "optimizer=adam,sgd"]


def run(folder: Path, tracking: str, extra: list[str], log_model: bool = False) -> float:
    models = ["tracking.log_model=true"] if log_model else []
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.run", *SWEEP, f"tracking={tracking}", *models, *extra],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({tracking}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("extra", nargs="*", help="overrides added to both sweeps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        first = run(folder, "local", args.extra)
        off, on, model = [], [], []
        for _ in range(args.rounds):
            off.append(run(folder, "off", args.extra))
            on.append(run(folder, "local", args.extra))
            model.append(run(folder, "local", args.extra, log_model=True))
    t_off, t_on, t_model = statistics.median(off), statistics.median(on), statistics.median(model)
    print(f"default sweep ({' '.join(SWEEP + args.extra)}), {args.rounds} alternating rounds, medians:")
    print(f"  tracking off                   {t_off:7.2f} s")
    print(f"  tracking on (existing store)   {t_on:7.2f} s   ratio {t_on / t_off:.3f}")
    print(f"  tracking on (new store, once)  {first:7.2f} s   ratio {first / t_off:.3f}")
    ratios = f"ratio {t_model / t_off:.3f} (to tracking on: {t_model / t_on:.3f})"
    print(f"  tracking on + log_model        {t_model:7.2f} s   {ratios}")
    for name, times in (("off", off), ("on", on), ("log_model", model)):
        print(f"  (each round, {name}: {' '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
