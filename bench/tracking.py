"""Wall time of the default sweep with MLflow tracking on against tracking off, side by side.

Each round runs the README's default sweep (``python -m sweeps.run -m optimizer=adam,sgd``) as a user does,
a fresh process each time, once with ``tracking=local`` (the SQLite store under mlruns/) and once with
``tracking=off``, once with ``tracking=local`` in a new folder (the run that creates the store), and once with
``tracking.log_model=true`` (each run's best checkpoint logged as an MLflow model), the four alternating so
that machine noise hits all of them; the medians are compared. One tracked run first warms up (imports, disk
caches) and is not counted.

    .venv/bin/python bench/tracking.py [--rounds 9] [-- extra overrides]
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
    parser.add_argument("--rounds", type=int, default=9)  # the README's table: 9 rounds
    parser.add_argument("extra", nargs="*", help="overrides added to both sweeps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run(folder, "local", args.extra)  # warm-up; it also creates the store the "existing store" arm uses
        off, on, new, model = [], [], [], []
        for i in range(args.rounds):
            off.append(run(folder, "off", args.extra))
            on.append(run(folder, "local", args.extra))
            fresh = Path(tmp) / f"new-{i}"
            fresh.mkdir()
            new.append(run(fresh, "local", args.extra))
            model.append(run(folder, "local", args.extra, log_model=True))
    t_off, t_on, t_new, t_model = (statistics.median(v) for v in (off, on, new, model))
    print(f"default sweep ({' '.join(SWEEP + args.extra)}), {args.rounds} alternating rounds, medians:")
    print(f"  tracking off                   {t_off:7.2f} s")
    print(f"  tracking on (existing store)   {t_on:7.2f} s   ratio {t_on / t_off:.3f}")
    print(f"  tracking on (new store)        {t_new:7.2f} s   ratio {t_new / t_off:.3f}")
    ratios = f"ratio {t_model / t_off:.3f} (to tracking on: {t_model / t_on:.3f})"
    print(f"  tracking on + log_model        {t_model:7.2f} s   {ratios}")
    for name, times in (("off", off), ("on", on), ("new store", new), ("log_model", model)):
        print(f"  (each round, {name}: {' '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
