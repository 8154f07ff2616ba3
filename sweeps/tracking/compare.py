"""Leaderboard of a sweep from the MLflow store: ``python -m sweeps.compare [SWEEP_ID] [options]``.

Shows rank, run, loss, optimizer, lr, betas, objective (and its test-split counterpart where the runs were
tested), epochs, time and state for each run of the sweep (the latest by default), then which config keys
differ between the runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from sweeps.outcome import test_metric_of
from sweeps.support.secrets import redact_text
from sweeps.tracking.leaderboard import aligned

DEFAULT_STORE = "sqlite:///mlruns/mlflow.db"
COLUMNS = ("loss", "optimizer", "lr", "optimizer.beta1", "optimizer.beta2")
IGNORED = ("hydra.", "tracking.", "trained.")  # trained.*: what was built, not config (``TrainedWith``)
FROM_MODULE = "module"  # the group choice of a part taken from a user module's own config


def short(target: str) -> str:
    """``lightning_modules.losses.CrossEntropy`` -> ``CrossEntropy``."""
    return target.rsplit(".", 1)[-1]


def find_sweep(client: Any, experiment: str, sweep: str | None) -> Any:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"error: no experiment named {experiment!r} in this store")
    if sweep:
        try:
            return client.get_run(sweep)
        except Exception:  # noqa: BLE001 - MLflow raises its own types for a missing run
            raise SystemExit(f"error: no sweep run {sweep!r} in this store") from None
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`sweeplab.kind` = 'sweep'",
        order_by=["start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise SystemExit(f"error: experiment {experiment!r} has no sweep yet (run one with -m)")
    return parents[0]


def leaderboard(client: Any, parent: Any) -> tuple[list[str], list[list[str]], list[str]]:
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=10000,
    )
    metric = next(
        (r.data.tags["sweeplab.objective"] for r in runs if "sweeplab.objective" in r.data.tags), ""
    )
    params = [r.data.params for r in runs]
    keys = sorted({k for p in params for k in p if not k.startswith(IGNORED)})
    differing = [k for k in keys if len({p.get(k) for p in params}) > 1]
    # A group whose option differs (loss=...) explains the keys under it (loss.label_smoothing, ...).
    differing = [k for k in differing if "." not in k or k.split(".")[0] not in differing]
    mode = "max"
    if runs and metric:
        first = runs[0].data.params
        mode = first.get("objective.mode", "auto")
        if mode == "auto":
            mode = "min" if any(w in metric for w in ("loss", "rmse", "mae")) else "max"

    def score(run: Any) -> float:
        value = run.data.metrics.get(scored(run, metric), math.nan)
        return -math.inf if math.isnan(value) else (value if mode == "max" else -value)

    runs = sorted(runs, key=score, reverse=True)
    head = ["rank", "run", "job", "loss", "optimizer", "lr", "betas", metric or "objective"]
    test = test_metric_of(metric)
    tested = test if test and any(test in r.data.metrics for r in runs) else None
    head += [*([tested] if tested else []), "epochs", "time"]
    cells = [_cells(i, run, metric, tested) for i, run in enumerate(runs, 1)]
    return [*head, "state"], cells, differing


def scored(run: Any, metric: str) -> str:
    """The metric a run was scored by: ``final_<objective>`` with ``objective.reduce=last``, else
    ``best_<objective>``."""
    return f"final_{metric}" if run.data.params.get("objective.reduce") == "last" else f"best_{metric}"


def _cells(rank: int, run: Any, metric: str, test: str | None = None) -> list[str]:
    """One run's row of the table: the optimizer as it was built (``trained.*``) where recorded."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    betas = f"{p['optimizer.beta1']},{p['optimizer.beta2']}" if "optimizer.beta1" in p else ""
    betas = p.get("trained.betas", betas).strip("()").replace(" ", "")
    optimizer = p.get("optimizer", short(p.get("optimizer._target_", "")))
    if optimizer in ("", FROM_MODULE):  # a user module's own optimizer: its class
        optimizer = p.get("trained.optimizer", optimizer)
    value = m.get(scored(run, metric))
    state = t.get("sweeplab.state", run.info.status)
    if t.get("sweeplab.reason"):
        state += f": {t['sweeplab.reason'][:60]}"
    return [
        str(rank),
        run.info.run_id[:8],
        t.get("sweeplab.job", ""),
        p.get("loss", short(p.get("loss._target_", ""))),
        optimizer,
        p.get("trained.lr", p.get("lr", "")),
        betas,
        "" if value is None else f"{value:.4f}" + _spread(m, metric),
        *([f"{m[test]:.4f}" if test in m else ""] if test else []),
        str(int(m.get("epochs", 0))),
        f"{m.get('train_seconds', 0):.1f}s",
        state,
    ]


def _spread(m: dict[str, float], metric: str) -> str:
    """A configuration run's 95% interval and its number of seeds (``repeats``), as `` ± 0.0123 (n=3)``."""
    low, high = m.get(f"best_{metric}_ci_low"), m.get(f"best_{metric}_ci_high")
    if low is None or high is None or math.isnan(low):
        return ""
    return f" ± {(high - low) / 2:.4f} (n={int(m.get('n_seeds', 0))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.compare", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", help="the sweep's MLflow run id (default: the latest sweep)")
    parser.add_argument("--experiment", default="sweeplab", help="experiment name (default: sweeplab)")
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"tracking URI (default: {DEFAULT_STORE})")
    args = parser.parse_args(argv)
    from sweeps.tracking.store import Store  # MLflow: after --help

    if args.store.startswith("sqlite:///") and not _exists(args.store):
        raise SystemExit(f"error: --store {args.store}: no such database (run a sweep first)")
    service = Store()
    client = service.connect(args.store)
    if client.get_experiment_by_name(args.experiment) is not None:
        service.open(
            args.store, args.experiment, None, None
        )  # closes runs whose process died, as every command
    parent = find_sweep(client, args.experiment, args.sweep)
    head, body, differing = leaderboard(client, parent)
    info = parent.info
    print(f"sweep {info.run_id} ({info.run_name}, {info.status}) in {redact_text(args.store)}")
    print(aligned(head, body) if body else "(no runs yet)")
    print(f"\nkeys that differ between runs: {', '.join(differing) if differing else 'none'}")
    return 0


def _exists(uri: str) -> bool:
    return Path(uri.removeprefix("sqlite:///")).is_file()
