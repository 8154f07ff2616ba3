"""Costs of sweeplab's Optuna sweep, side by side in one run.

1. Fixed cost per trial: our sweep (``python -m sweeps.run -m ...``, Hydra launcher, MLflow records, pruning
   hooks) against a bare ``optuna`` loop calling the same training function (``sweeps.training.job.train``)
   on the same trials. Each is run for N and 3N trials; the slope (seconds per extra trial) removes start-up
   costs. A one-trial run of each warms up first (imports; our store and journal are created there, so no
   measured run pays for them), then the four runs alternate (bare N, ours N, bare 3N, ours 3N) for
   ``--rounds`` rounds; the overhead is the median of the rounds' differences (each round's arms are paired).
2. Pruning: training epochs a study with the median pruner spends to reach the best value of the same study
   without pruning (same sampler and seed), as a ratio: mean +- std over several search seeds (5 by default).

    .venv/bin/python bench/sweep.py [--trials 6] [--rounds 5] [--pruning-trials 24] [--search-seeds 5]
    .venv/bin/python bench/sweep.py --search-seeds 0     # the per-trial cost alone
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeps.training.job import train  # noqa: E402

TRAINING = ["trainer.max_epochs=3", "checkpoint=false", "early_stopping_patience=0", "trainer.progress=none"]
SPACE = {"lr": (1e-4, 1e-1), "optimizer.beta1": (0.8, 0.99), "optimizer.beta2": (0.9, 0.9999)}


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes and theirs: a machine busy with other
    work slows the wall clock far more than it changes these."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def ours(folder: Path, n: int, extra: list[str]) -> tuple[float, float]:
    args = [
        "-m",
        "search=lr_betas",
        f"hydra.sweeper.n_trials={n}",
        "hydra/sweeper/pruner=none",
        f"hydra.sweeper.study_name=bench-{n}-{time.time_ns()}",
        *TRAINING,
        *extra,
    ]
    start, cpu = time.perf_counter(), children_cpu()
    cli(folder, args)
    return time.perf_counter() - start, children_cpu() - cpu


def cli(folder: Path, args: list[str]) -> None:
    """``python -m sweeps.run ARGS`` in ``folder``, as a user runs it; stop the benchmark if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.run", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])


def bare(n: int) -> tuple[float, float]:
    """The reference: optuna.optimize over the same training function, nothing else."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=42, n_startup_trials=5)
    )

    def objective(trial: optuna.Trial) -> float:
        overrides = [
            f"lr={trial.suggest_float('lr', *SPACE['lr'], log=True)}",
            f"optimizer.beta1={trial.suggest_float('optimizer.beta1', *SPACE['optimizer.beta1'])}",
            f"optimizer.beta2={trial.suggest_float('optimizer.beta2', *SPACE['optimizer.beta2'])}",
        ]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(
                config_name="config", overrides=["optimizer=adam", "tracking=off", *TRAINING, *overrides]
            )
        return float(train(cfg))

    start, cpu = time.perf_counter(), time.process_time()
    study.optimize(objective, n_trials=n)
    return time.perf_counter() - start, time.process_time() - cpu


def epochs_to_reach(trials: list, target: float) -> int | None:
    spent = 0
    for trial in trials:
        spent += len(trial.intermediate_values)
        if trial.value is not None and trial.value >= target:
            return spent
    return None


def pruning_ratio(folder: Path, n: int, seed: int) -> tuple[float | None, str]:
    """One search seed: epochs the median pruner spends to reach the best value of the unpruned study with
    the same sampler seed, over the epochs that study spent (None when the pruned study never reached it)."""
    journal = folder / "mlruns" / "optuna.journal"
    common = [
        "-m",
        "search=lr_betas",
        f"hydra.sweeper.n_trials={n}",
        f"hydra.sweeper.sampler.seed={seed}",
        "trainer.max_epochs=10",
        "checkpoint=false",
        "early_stopping_patience=0",
        "tracking=off",
    ]
    for pruner in ("none", "median"):
        name = f"prune-{pruner}-{seed}"
        cli(folder, [*common, f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.study_name={name}"])
    storage = JournalStorage(JournalFileBackend(str(journal)))
    plain = optuna.load_study(study_name=f"prune-none-{seed}", storage=storage).get_trials()
    pruned = optuna.load_study(study_name=f"prune-median-{seed}", storage=storage).get_trials()
    target = max(t.value for t in plain if t.value is not None)
    e_plain, e_pruned = epochs_to_reach(plain, target), epochs_to_reach(pruned, target)
    n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in pruned)
    said = (
        f"  seed {seed}: best val_acc without pruning {target:.4f}; epochs to reach it: "
        f"no pruning {e_plain}, median pruner {e_pruned} ({n_pruned} trials pruned)"
    )
    return (e_pruned / e_plain if e_pruned is not None and e_plain else None), said


def pruning(folder: Path, n: int, seeds: int) -> None:
    """The pruning ratio as mean +- std over ``seeds`` search seeds (one seed's figure is mostly noise: 0.41
    and 0.93 were read on two days from the same command)."""
    print(f"pruning ({n} trials, 10 epochs each, TPE seeds 0..{seeds - 1}):")
    ratios = []
    for seed in range(seeds):
        ratio, said = pruning_ratio(folder, n, seed)
        print(said + (f", ratio {ratio:.2f}" if ratio is not None else ", never reached"), flush=True)
        if ratio is not None:
            ratios.append(ratio)
    if ratios:
        std = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
        print(
            f"  ratio {statistics.mean(ratios):.2f} ± {std:.2f} (mean ± std over {len(ratios)} seeds", end=""
        )
        print(f"; {seeds - len(ratios)} never reached the unpruned best) (goal <= 0.5)")
    else:
        print("  the pruned studies never reached the unpruned best")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pruning-trials", type=int, default=24)
    parser.add_argument("--search-seeds", type=int, default=5, help="the pruning ratio's search seeds")
    args = parser.parse_args()
    n, big = args.trials, 3 * args.trials
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bare(1), ours(folder, 1, [])  # warm-up: imports; our MLflow store and Optuna journal are created
        slopes: dict[str, list[float]] = {"bare": [], "ours": []}
        cpu: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(args.rounds):  # alternating, so that machine noise hits both
            b_n, o_n = bare(n), ours(folder, n, [])
            b_big, o_big = bare(big), ours(folder, big, [])
            for arm, (few, many) in (("bare", (b_n, b_big)), ("ours", (o_n, o_big))):
                slopes[arm].append((many[0] - few[0]) / (big - n))
                cpu[arm].append((many[1] - few[1]) / (big - n))
        print(
            f"per-trial time in steady state ({n} vs {big} trials, 3 epochs each, sweeplab tracking on, ",
            end="",
        )
        print(f"medians of {args.rounds} alternating rounds; wall clock, and CPU seconds of all processes):")
        # Each round's two arms ran minutes apart, so the overhead is the median of the rounds' differences
        # (paired), which the machine's slow drifts cancel out of.
        for name, got in (("wall", slopes), ("CPU", cpu)):
            overheads = [o - b for b, o in zip(got["bare"], got["ours"], strict=True)]
            rows = (
                ("bare optuna loop over sweeps.training.job.train", statistics.median(got["bare"])),
                ("sweeplab sweep", statistics.median(got["ours"])),
                ("fixed overhead per trial", statistics.median(overheads)),
            )
            for label, value in rows:
                print(f"  {name:>4}: {label:<50} {value:6.3f} s/trial")
            print("        (the overhead: median of the rounds' differences; goal <= 0.05)")
            for arm, values in (("bare", got["bare"]), ("sweeplab", got["ours"]), ("overhead", overheads)):
                print(f"        (each round, {arm}: {' '.join(f'{v:.3f}' for v in values)} s/trial)")
        if args.search_seeds:  # 0: the per-trial cost alone (the pruning part takes most of the time)
            pruning(folder, args.pruning_trials, args.search_seeds)


if __name__ == "__main__":
    main()
