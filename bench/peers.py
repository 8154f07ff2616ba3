"""One small search, whole-command wall time, against the floor and (where installed) a peer, side by side.

The search (issue 35): the digits MLP 64-128-10, Adam, batch 32, 10 epochs, lr log-uniform in [1e-4, 1e-1],
12 TPE trials, no pruning. The arms, each a fresh process (cold, as a user runs it):

- floor: a plain Optuna loop (``study.optimize``) over a hand-written PyTorch loop, sequential and with
  ``n_jobs=2`` (Optuna's threads);
- sweeplab, ``hydra.sweeper.n_jobs`` 1 and 2, tracking on (an existing ``mlruns/`` store, as a user has
  after the first command; each run a new study) and ``tracking=off``; with ``--tree DIR`` (repeatable)
  the sweeplab arms run for each checkout (an older commit beside this one);
- Ray Tune (only when ``ray`` is importable; not a dependency): the same hand-written loop as a function
  trainable with ``OptunaSearch``, ``reuse_actors=True``, 1 and 2 trials at once.

The arms alternate for ``--rounds`` rounds so that machine noise hits all of them; medians and ratios to the
floor are printed, and when the first trial started and its first epoch ended (seconds after the command
started: import and set-up cost; a trial's start is the line that launches it, for the floor the start of
its objective) and how long the command went on after its last trial's line (the summary, the pictures,
the parent run, closing the tracking process). A warm-up run of each kind comes first and is not counted.

    .venv/bin/python bench/peers.py [--rounds 3] [--warmup 1] [--trials 12] [--epochs 10] [--tree DIR]...
                                    [--tracking both|on|off] [--no-floor]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
FLOOR = "--floor-search"  # this file, run as the floor's search: FLOOR N_JOBS TRIALS EPOCHS
RAY = "--ray-search"  # this file, run as Ray Tune's search: RAY N_JOBS TRIALS EPOCHS
TRACKING = {"both": ("on", "off"), "on": ("on",), "off": ("off",)}  # --tracking: sweeplab's arms
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
FINISHED = re.compile(r"search: trial \d+ (finished|pruned|failed)")
STARTED = re.compile(r"\t#\d+ : |search: trial \d+ started")  # sweeplab's launch line; the floor's
EPOCH = re.compile(r"\] epoch$")  # the floor's (sweeplab's launch line names ``max_epochs``: not one)


def data() -> tuple[object, object, object, object]:
    """The digits, as sweeplab's data module has them (8x8 floats), split 80/20 with a fixed seed."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def train(lr: float, epochs: int, split: tuple[object, ...]) -> float:
    """The hand-written loop: MLP 64-128-10, Adam, batch 32; the best epoch's validation accuracy."""
    import torch
    from torch import nn

    x, y, vx, vy = split
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best = 0.0
    for _ in range(epochs):
        model.train()
        for i in torch.randperm(len(x)).split(32):  # type: ignore[arg-type]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()  # type: ignore[index]
            opt.step()
        model.eval()
        with torch.no_grad():
            best = max(best, (model(vx).argmax(1) == vy).float().mean().item())  # type: ignore[operator]
        print(f"{stamp()} epoch", flush=True)
    return best


def stamp() -> str:
    """Now, as sweeplab's log lines start (``[2026-12-06 05:55:34,076]``)."""
    return f"[{dt.datetime.now():%Y-%m-%d %H:%M:%S,%f}"[:-3] + "]"


def floor_search(n_jobs: int, trials: int, epochs: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    split = data()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        print(f"{stamp()} search: trial {trial.number} started", flush=True)
        value = train(trial.suggest_float("lr", 1e-4, 1e-1, log=True), epochs, split)
        print(f"{stamp()} search: trial {trial.number} finished", flush=True)  # as sweeplab says it
        return value

    study.optimize(objective, n_trials=trials, n_jobs=n_jobs)


def ray_search(n_jobs: int, trials: int, epochs: int) -> None:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    split = data()
    tuner = tune.Tuner(
        lambda config: {"acc": train(config["lr"], epochs, split)},
        param_space={"lr": tune.loguniform(1e-4, 1e-1)},
        tune_config=tune.TuneConfig(
            metric="acc",
            mode="max",
            search_alg=OptunaSearch(),
            num_samples=trials,
            max_concurrent_trials=n_jobs,
            reuse_actors=True,
        ),
    )
    tuner.fit()


def sweeplab_args(n_jobs: int, tracking: str, trials: int, epochs: int, study: str) -> list[str]:
    return [
        "-m",
        "sweeps.run",
        "-m",
        "lr=tag(log, interval(1e-4, 1e-1))",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        f"hydra.sweeper.study_name={study}",
        "hydra/sweeper/pruner=none",
        f"tracking={tracking}",
        f"trainer.max_epochs={epochs}",
        "early_stopping_patience=0",
        "checkpoint=false",
    ]


class Timing(NamedTuple):
    """One command's figures, in seconds (nan where its output has no such line)."""

    seconds: float  # wall time
    started: float  # the first trial's start, after the command's
    first_epoch: float  # the first epoch's end (the floor's: sweeplab prints no epoch lines)
    first_trial: float  # the first trial's end
    closing: float  # from the last trial's end to the command's


def timed(command: list[str], cwd: Path, tree: Path) -> Timing:
    """Wall time of ``python COMMAND`` in ``cwd`` with ``tree`` importable; when its first trial started
    and its first epoch and first trial ended (seconds after the start; from the first time-stamped line
    that launches a trial, the floor's "epoch" lines (sweeplab says none), and "trial N finished"); and
    how long it ran on after its last "trial N finished" line (nan where there is none)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("OMP_NUM_THREADS", None)  # torch's defaults, as a user has them
    started, start = time.time(), time.perf_counter()
    proc = subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    ended = started + seconds
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    starts, epochs, trials, ends = [], [], [], []
    for line in (proc.stdout + proc.stderr).splitlines():
        found = STAMP.match(line)
        if found:
            stamp = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if STARTED.search(line):
                starts.append(stamp - started)
            if EPOCH.search(line):
                epochs.append(stamp - started)
            if FINISHED.search(line):
                trials.append(stamp - started)
                ends.append(ended - stamp)
    first = [min(found, default=math.nan) for found in (starts, epochs, trials, ends)]
    return Timing(seconds, *first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first")
    parser.add_argument("--tree", action="append", type=Path, help="a sweeplab checkout (default: this one)")
    parser.add_argument("--tracking", choices=("both", "on", "off"), default="both", help="sweeplab's arms")
    parser.add_argument(
        "--no-floor", action="store_true", help="sweeplab's arms only (long trials: n_jobs=2 / n_jobs=1)"
    )
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree] if args.tree else [ROOT]
    try:
        import ray  # noqa: F401

        with_ray = True
    except ImportError:
        with_ray = False
    me = str(Path(__file__).resolve())
    size = [str(args.trials), str(args.epochs)]
    arms: dict[str, tuple[list[str], Path]] = {}
    for n in (1, 2):
        if not args.no_floor:
            arms[f"floor, n_jobs={n}"] = ([me, FLOOR, str(n), *size], ROOT)
        for tree in trees:
            label = f" [{tree.name}]" if len(trees) > 1 else ""
            for tracking in TRACKING[args.tracking]:
                name = f"sweeplab{label}, n_jobs={n}, tracking {tracking}"
                store = "local" if tracking == "on" else "off"  # the tracking group's option
                arms[name] = (sweeplab_args(n, store, args.trials, args.epochs, "{study}"), tree)
        if with_ray:
            arms[f"Ray Tune (reuse_actors), n_jobs={n}"] = ([me, RAY, str(n), *size], ROOT)
    rounds: dict[str, list[Timing]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.warmup + args.rounds):  # warm-up rounds: imports, disk caches, the stores
            for i, (name, (command, tree)) in enumerate(arms.items()):
                command = [c.replace("{study}", f"peers-{r}-{i}") for c in command]
                timing = timed(command, folder, tree)
                if r >= args.warmup:
                    rounds[name].append(timing)
    times = {name: [t.seconds for t in timings] for name, timings in rounds.items()}
    print(
        f"search: digits MLP 64-128-10, Adam, batch 32, {args.epochs} epochs, lr log-uniform [1e-4, 1e-1], "
        f"{args.trials} TPE trials, no pruning; {args.rounds} alternating rounds, medians"
    )
    for n in (1, 2):
        floor = math.nan if args.no_floor else statistics.median(times[f"floor, n_jobs={n}"])
        for name in (a for a in arms if a.endswith(f"n_jobs={n}") or f"n_jobs={n}," in a):
            m = Timing(*(statistics.median(column) for column in zip(*rounds[name], strict=True)))
            print(
                f"  {name:48s} {m.seconds:7.2f} s  / floor {m.seconds / floor:5.2f}   first trial started at"
                f" {m.started:5.2f} s   first epoch at {m.first_epoch:5.2f} s   first trial done at"
                f" {m.first_trial:5.2f} s   exit {m.closing:4.2f} s after the last trial"
            )
    for tree in trees:
        label = f" [{tree.name}]" if len(trees) > 1 else ""
        for tracking in TRACKING[args.tracking]:
            one = statistics.median(times[f"sweeplab{label}, n_jobs=1, tracking {tracking}"])
            two = statistics.median(times[f"sweeplab{label}, n_jobs=2, tracking {tracking}"])
            print(f"  sweeplab{label} tracking {tracking}: n_jobs=2 / n_jobs=1 = {two / one:.2f}")
    for name, values in times.items():
        print(f"  (each round, {name}: {' '.join(f'{t:.2f}' for t in values)})")


if __name__ == "__main__":
    if sys.argv[1:2] in ([FLOOR], [RAY]):
        n_jobs, trials, epochs = (int(v) for v in sys.argv[2:5])
        (floor_search if sys.argv[1] == FLOOR else ray_search)(n_jobs, trials, epochs)
    else:
        main()
