"""Search efficiency: training epochs each search strategy spends until it finds a configuration as good as
the full grid's best (within the grid's seed noise), as a ratio to the grid's epochs.

One problem: digits, the MLP, loss (cross_entropy, mse) x optimizer (sgd, momentum, adam, rmsprop) x lr (6
values, log-spaced 1e-4 to 1e-1), a fixed budget of epochs per run. Strategies over the same space: random
search, TPE, random + median pruning, TPE + median pruning, TPE + hyperband, and TPE + median pruning with
``lr=auto`` (each optimizer's lrs limited to a decade either side of its range-test suggestion; the range
tests' steps are charged as epochs). Each strategy runs over several search seeds; figures are mean +- std.

Method (a tabular benchmark, as HPOBench and NAS-Bench do): every configuration of the grid is trained once
per training seed through sweeplab's ``train`` (the per-epoch val_acc curve kept), then each strategy is
a real Optuna study (its real sampler and pruner) whose trials replay the curve of the configuration and of a
training seed it drew. Training every strategy for real would cost ~30x more for the same answer.
A run's value is its best epoch (``objective.reduce=best``). The grid's best is the best configuration's mean
over training seeds; its noise is the std over those seeds. A strategy has "reached" the grid's best once its
best-so-far is within that noise; a search seed that never reaches it counts as a ratio of 1 (it would have
needed the grid) and is reported in the "reached" column.

    .venv/bin/python bench/search.py [--quick] [--png search.png]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_modules.callbacks import EpochEnd  # noqa: E402
from lightning_modules.module import NonFiniteLoss  # noqa: E402
from sweeps.training.fit import fit, prepare  # noqa: E402
from sweeps.training.lr_find import range_test  # noqa: E402

LOSSES = ["cross_entropy", "mse"]
OPTIMIZERS = ["sgd", "momentum", "adam", "rmsprop"]
LRS = [1e-4, 4e-4, 1.6e-3, 6.3e-3, 2.5e-2, 1e-1]  # log-spaced 1e-4 .. 1e-1
Config = tuple[str, str, float]


@dataclass
class Table:
    """Per configuration, per training seed: val_acc after each epoch."""

    curves: dict[Config, list[list[float]]]
    epochs: int

    def value(self, config: Config, seed: int) -> float:
        return max(self.curves[config][seed])

    def mean(self, config: Config) -> float:
        return statistics.mean(max(c) for c in self.curves[config])


def compose_cfg(overrides: list[str]):  # noqa: ANN201 - a DictConfig
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def curve(config: Config, seed: int, epochs: int) -> list[float]:
    """val_acc after each epoch of one real run (0 for the epochs a diverged run did not reach)."""
    loss, optimizer, lr = config
    cfg = compose_cfg(
        [
            f"loss={loss}",
            f"optimizer={optimizer}",
            f"lr={lr}",
            f"seed={seed}",
            f"trainer.max_epochs={epochs}",
            "checkpoint=false",
            "early_stopping_patience=0",
            "trainer.progress=none",
        ]
    )
    values: list[float] = []
    try:
        fit(cfg, prepare(cfg), callbacks=[EpochEnd(lambda _e, m: values.append(float(m.get("val_acc", 0))))])
    except NonFiniteLoss:
        pass
    return values + [0.0] * (epochs - len(values))


def build_table(epochs: int, seeds: int) -> Table:
    configs = list(itertools.product(LOSSES, OPTIMIZERS, LRS))
    curves: dict[Config, list[list[float]]] = {}
    start = time.perf_counter()
    for i, config in enumerate(configs, 1):
        curves[config] = [curve(config, 100 + s, epochs) for s in range(seeds)]
        if i % 8 == 0:
            print(f"  table: {i}/{len(configs)} configurations trained ({time.perf_counter() - start:.0f}s)")
    return Table(curves, epochs)


def load_or_build(path: str | None, epochs: int, seeds: int) -> Table:
    """The table from ``path`` when it holds one of these settings; else trained (and saved there)."""
    if path and Path(path).exists():
        saved = json.loads(Path(path).read_text())
        if saved["epochs"] == epochs and saved["seeds"] == seeds:
            curves = {(c[0], c[1], float(c[2])): v for c, v in saved["curves"]}
            return Table(curves, epochs)
    table = build_table(epochs, seeds)
    if path:
        rows = [[list(config), values] for config, values in table.curves.items()]
        Path(path).write_text(json.dumps({"epochs": epochs, "seeds": seeds, "curves": rows}))
    return table


def lr_auto_choices() -> tuple[dict[str, list[float]], float]:
    """Each optimizer's grid lrs within a decade of its range-test suggestion; the tests' cost in epochs."""
    allowed, epochs = {}, 0.0
    for optimizer in OPTIMIZERS:
        built = prepare(compose_cfg([f"optimizer={optimizer}", "trainer.progress=none"]))
        found = range_test(built, 1e-6, 10.0, 100)
        loader = built.datamodule.train_dataloader()
        epochs += len(found.lrs) / getattr(loader, "steps", len(loader))
        near = [lr for lr in LRS if found.suggestion / 10 <= lr <= found.suggestion * 10]
        allowed[optimizer] = near or [min(LRS, key=lambda lr: abs(lr / found.suggestion - 1))]
    return allowed, epochs


STRATEGIES = {
    "random": ("random", None),
    "TPE": ("tpe", None),
    "random+median": ("random", "median"),
    "TPE+pruning": ("tpe", "median"),
    "TPE+hyperband": ("tpe", "hyperband"),
    "TPE+pruning+lr=auto": ("tpe", "median"),
}


def search(table: Table, name: str, seed: int, trials: int, allowed: dict[str, list[float]] | None):
    """One study: the best-so-far after each trial, as (epochs spent, best value) steps."""
    sampler_name, pruner_name = STRATEGIES[name]
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if sampler_name == "tpe"
        else optuna.samplers.RandomSampler(seed)
    )
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if pruner_name == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    elif pruner_name == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=table.epochs)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    draw = random.Random(seed)
    spent, best, steps = 0.0, 0.0, []

    def objective(trial: optuna.Trial) -> float:
        nonlocal spent, best
        loss = trial.suggest_categorical("loss", LOSSES)
        optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
        lrs = allowed[optimizer] if allowed else LRS
        lr = trial.suggest_categorical(f"lr_{optimizer}" if allowed else "lr", lrs)
        values = table.curves[(loss, optimizer, lr)][draw.randrange(len(table.curves[(loss, optimizer, lr)]))]
        seen = 0.0
        for epoch, value in enumerate(values, 1):
            spent += 1
            seen = max(seen, value)
            trial.report(value, epoch)
            if trial.should_prune():
                break
        best = max(best, seen)
        steps.append((spent, best))
        return seen

    study.optimize(objective, n_trials=trials)
    return steps


def reached_at(steps: list[tuple[float, float]], threshold: float, start: float) -> float | None:
    for spent, best in steps:
        if best >= threshold:
            return spent + start
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 epochs, 2 training seeds (a few minutes)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 10; --quick 4)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="training seeds per configuration (3; --quick 2)"
    )
    parser.add_argument("--search-seeds", type=int, default=5)
    parser.add_argument("--png", default="search.png")
    parser.add_argument("--table", help="JSON file: the trained table is read from it if there, else saved")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = args.epochs or (4 if args.quick else 10)
    seeds = args.seeds or (2 if args.quick else 3)
    size = len(LOSSES) * len(OPTIMIZERS) * len(LRS)
    print(f"grid: {size} configurations x {seeds} training seeds x {epochs} epochs")
    table = load_or_build(args.table, epochs, seeds)
    configs = list(table.curves)
    best_config = max(configs, key=table.mean)
    noise = statistics.stdev(max(c) for c in table.curves[best_config])
    threshold = table.mean(best_config) - noise
    grid_epochs = len(configs) * epochs
    print(
        f"grid best: {best_config} val_acc {table.mean(best_config):.4f} +- {noise:.4f} (training seeds); "
        f"target {threshold:.4f}; grid epochs {grid_epochs}"
    )
    allowed, auto_cost = lr_auto_choices()
    print(f"lr=auto ranges: {allowed} (range tests: {auto_cost:.1f} epochs)")
    results: dict[str, list[tuple[float, list[tuple[float, float]]]]] = {}
    print(f"\n{'strategy':<22} {'epochs to reach':>18} {'reached':>8} {'ratio to grid':>16}")
    for name in STRATEGIES:
        auto = name.endswith("lr=auto")
        ratios, to_reach, runs = [], [], []
        for seed in range(args.search_seeds):
            steps = search(table, name, seed, trials=len(configs), allowed=allowed if auto else None)
            at = reached_at(steps, threshold, auto_cost if auto else 0.0)
            runs.append((auto_cost if auto else 0.0, steps))
            if at is not None:
                to_reach.append(at)
            ratios.append(min(at / grid_epochs, 1.0) if at is not None else 1.0)
        results[name] = runs
        shown = (
            f"{statistics.mean(to_reach):.0f} +- {statistics.pstdev(to_reach):.0f}" if to_reach else "never"
        )
        ratio = f"{statistics.mean(ratios):.2f} +- {statistics.stdev(ratios):.2f}"
        print(f"{name:<22} {shown:>18} {len(to_reach):>5}/{args.search_seeds} {ratio:>16}")
        if name == "TPE+pruning":
            last = ratio
    draw_curves(results, table, threshold, grid_epochs, Path(args.png))
    print(f"\ncurves: {args.png}")
    print(f"TPE+pruning / grid epochs: {last}")


def draw_curves(results, table: Table, threshold: float, grid_epochs: int, path: Path) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, runs) in enumerate(results.items()):
        for j, (start, steps) in enumerate(runs):
            xs = [start] + [start + s for s, _ in steps]
            ys = [0.0] + [b for _, b in steps]
            ax.step(xs, ys, where="post", color=f"C{i}", alpha=0.6, label=name if j == 0 else None)
    ax.axhline(threshold, color="black", linestyle="--", label="grid's best - seed noise")
    ax.axvline(grid_epochs, color="grey", linestyle=":", label="grid's epochs")
    ax.set_xscale("log")
    ax.set_ylim(max(0.0, threshold - 0.3), 1.0)
    ax.set_xlabel("training epochs spent")
    ax.set_ylabel("best val_acc so far")
    ax.set_title("search strategies on digits: loss x optimizer x lr")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
