"""``python -m sweeps.benchmark [options] [overrides]``: the optimizer benchmark protocol in one command.

For each optimizer (x loss) of the lists: tune ``lr`` (and Adam's betas where the optimizer has them) with the
same budget of Optuna trials, rerun each one's best configuration on N seeds (10 by default, as DeepOBS),
and report a table of mean +- 95% CI with the verdicts, the budget each used and a learning-rate sensitivity
plot per optimizer, in ``mlruns/benchmark/NAME/`` and on one MLflow parent run. Killed and run again with the
same name, it resumes where it stopped. Example:

    python -m sweeps.benchmark --optimizers sgd,momentum,adam,adamw,rmsprop --trials 20 --seeds 10 \\
        data=digits trainer.max_epochs=20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sweeps.benchmark import protocol
from sweeps.support.processes import pid_tags
from sweeps.tracking.benchmark_report import Arm, report

STORE = "sqlite:///mlruns/mlflow.db"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sweeps.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default="sgd,momentum,adam,adamw,rmsprop")
    parser.add_argument("--losses", default="cross_entropy")
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials per optimizer (default 20)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of each rerun (default 10)")
    parser.add_argument(
        "--lr", default="1e-4,1.0", help="the lr range searched, log scale (default 1e-4,1.0)"
    )
    parser.add_argument("--search-seed", type=int, default=0, help="the samplers' seed (default 0)")
    parser.add_argument("--name", default="benchmark", help="resume by this name (default: benchmark)")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.max_epochs=5"
    )
    opts = parser.parse_args(argv)
    try:
        opts.lr_low, opts.lr_high = (float(x) for x in opts.lr.split(","))
    except ValueError:
        parser.exit(2, f"error: --lr {opts.lr}: give two numbers, e.g. 1e-4,1.0\n")
    if opts.trials < 1 or opts.seeds < 2:
        parser.exit(2, "error: --trials must be >= 1 and --seeds >= 2\n")
    unknown = [
        o for o in opts.optimizers.split(",") if not (protocol.CONF / "optimizer" / f"{o}.yaml").is_file()
    ]
    if unknown:
        parser.exit(2, f"error: --optimizers: no conf/optimizer/{unknown[0]}.yaml\n")
    return opts


def open_parent(store: object, folder: Path, name: str) -> str:
    """The benchmark's MLflow parent run: created once, running again when the benchmark resumes."""
    client = store.client  # type: ignore[attr-defined]
    state = folder / "state.json"
    pid = pid_tags()
    if state.exists():
        run_id = json.loads(state.read_text())["parent"]
        client.update_run(run_id, status="RUNNING")
        for key, value in pid.items():
            client.set_tag(run_id, key, value)
        return run_id
    tags = {"sweeplab.kind": "benchmark", "sweeplab.command": " ".join(sys.argv), **pid}
    run_id = store.start_run("benchmark", f"benchmark {name}", tags)  # type: ignore[attr-defined]
    state.write_text(json.dumps({"parent": run_id}) + "\n")
    return run_id


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    from sweeps.tracking.store import Store  # MLflow: after --help

    folder = Path("mlruns") / "benchmark" / opts.name
    folder.mkdir(parents=True, exist_ok=True)
    store = Store()
    opened = store.open(STORE, "sweeplab", "mlruns/artifacts", None)  # closes the runs of a killed try
    parent = open_parent(store, folder, opts.name)
    arms = [Arm(loss, o) for loss in opts.losses.split(",") for o in opts.optimizers.split(",")]
    status = "FAILED"
    try:
        for arm in arms:
            print(f"benchmark: tuning {arm.key} ({opts.trials} trials)", flush=True)
            protocol.tune(opts.name, arm, opts, folder, parent)
            protocol.read_tuning(opts.name, arm)
        experiment = opened["experiment_id"]
        protocol.read_reruns(store.client, experiment, parent, arms)
        print(f"benchmark: rerunning the tuned configurations on {opts.seeds} seeds", flush=True)
        protocol.rerun(opts.name, arms, opts, folder, parent)
        metric = protocol.read_reruns(store.client, experiment, parent, arms) or "objective"
        study = protocol.load_study(opts.name, arms[0])
        mode = "min" if study is not None and study.direction.name == "MINIMIZE" else "max"
        for name in report(arms, metric, mode, folder):
            store.client.log_artifact(parent, str(folder / name))
        print((folder / "benchmark.md").read_text(), flush=True)
        status = "FINISHED"
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        store.client.set_terminated(parent, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
