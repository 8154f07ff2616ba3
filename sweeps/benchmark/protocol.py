"""The steps of the optimizer benchmark, each resumable: tune each optimizer with its own Optuna study (named
after the benchmark, so a rerun resumes it), rerun the tuned configurations on N seeds as one grid sweep
(``experiment=`` files written here), and read everything back for the report.

Each step is a ``python -m sweeps.run`` process like any sweep (``SWEEPLAB_PARENT_RUN`` nests its MLflow runs
under the benchmark's parent run): what a sweep already does (resume, prune, repeats, leaderboard) is not
done twice. A finished step is skipped on a rerun: a study that holds its trials, a configuration run that
finished.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeps.search import DEFAULT_STORAGE
from sweeps.search.study import storage
from sweeps.tracking.benchmark_report import Arm
from sweeps.tracking.session import OUTER

CONF = Path(__file__).resolve().parents[2] / "conf"
BETAS = {"optimizer.beta1": "interval(0.8, 0.99)", "optimizer.beta2": "interval(0.9, 0.9999)"}


def has_betas(optimizer: str) -> bool:
    """Whether the optimizer's config has Adam's betas (tuned with the lr)."""
    path = CONF / "optimizer" / f"{optimizer}.yaml"
    return path.is_file() and "beta1" in OmegaConf.load(path)


def study_name(bench: str, arm: Arm) -> str:
    return f"{bench}-{arm.key}"


def load_study(bench: str, arm: Arm) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=study_name(bench, arm), storage=storage(DEFAULT_STORAGE))
    except KeyError:
        return None


def sweep(args: list[str], parent: str, log: Path) -> int:
    """One ``python -m sweeps.run -m`` of the benchmark, its output appended to ``log``."""
    with log.open("a") as out:
        out.write(f"\n$ python -m sweeps.run {' '.join(args)}\n")
        out.flush()
        env = {**os.environ, OUTER: parent}
        return subprocess.run(
            [sys.executable, "-m", "sweeps.run", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        ).returncode


def tune(bench: str, arm: Arm, opts: Any, folder: Path, parent: str) -> None:
    """The arm's Optuna search of ``opts.trials`` trials (skipped once its study holds them)."""
    study = load_study(bench, arm)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    if study is not None and len(study.get_trials(deepcopy=False, states=done)) >= opts.trials:
        return
    space = [f"lr=tag(log, interval({opts.lr_low}, {opts.lr_high}))"]
    space += [f"{k}={v}" for k, v in BETAS.items()] if has_betas(arm.optimizer) else []
    args = [
        "-m",
        f"loss={arm.loss}",
        f"optimizer={arm.optimizer}",
        *space,
        f"hydra.sweeper.n_trials={opts.trials}",
        f"hydra.sweeper.study_name={study_name(bench, arm)}",
        f"hydra.sweeper.sampler.seed={opts.search_seed}",
        f"hydra.sweep.dir={folder / 'search' / arm.key}",
        *opts.overrides,
    ]
    code = sweep(args, parent, folder / "benchmark.log")
    if code != 0:
        raise RuntimeError(
            f"the search of {arm.key} ended with exit code {code} (see {folder / 'benchmark.log'})"
        )


def read_tuning(bench: str, arm: Arm) -> None:
    """The arm's tuned parameters and its budget, from its study."""
    study = load_study(bench, arm)
    if study is None:
        return
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    for t in trials:
        value = (
            t.value
            if t.state == TrialState.COMPLETE and t.value is not None
            else _last(t.intermediate_values)
        )
        arm.trials.append((float(t.params.get("lr", math.nan)), value, t.state.name))
        arm.epochs += len(t.intermediate_values)
        arm.seconds += t.duration.total_seconds() if t.duration else 0.0
    if any(t.state == TrialState.COMPLETE for t in trials):
        arm.best = {k: float(v) for k, v in study.best_trial.params.items()}


def _last(values: dict[int, float]) -> float:
    return values[max(values)] if values else math.nan


def rerun(bench: str, arms: list[Arm], opts: Any, folder: Path, parent: str) -> None:
    """One grid sweep of the tuned configurations not rerun yet, each on ``opts.seeds`` seeds."""
    todo = [arm for arm in arms if arm.best and not arm.samples]
    if not todo:
        return
    conf = folder / "conf" / "experiment"
    conf.mkdir(parents=True, exist_ok=True)
    for arm in todo:
        params = {"lr" if k == "lr" else k.split(".")[-1]: v for k, v in arm.best.items()}
        node: dict[str, Any] = {"lr": params.pop("lr")}
        if params:
            node["optimizer"] = params
        body = OmegaConf.to_yaml(OmegaConf.create(node))
        defaults = f"defaults:\n  - override /loss: {arm.loss}\n  - override /optimizer: {arm.optimizer}\n"
        (conf / f"{bench}_{arm.key}.yaml").write_text(f"# @package _global_\n{defaults}\n{body}")
    attempt = len(list((folder / "rerun").glob("*"))) if (folder / "rerun").is_dir() else 0
    args = [
        "-m",
        "experiment=" + ",".join(f"{bench}_{arm.key}" for arm in todo),
        f"repeats={opts.seeds}",
        f"hydra.searchpath=[file://{folder / 'conf'}]",
        f"hydra.sweep.dir={folder / 'rerun' / str(attempt)}",
        *opts.overrides,
    ]
    code = sweep(args, parent, folder / "benchmark.log")
    if code != 0:
        raise RuntimeError(f"the reruns ended with exit code {code} (see {folder / 'benchmark.log'})")


def read_reruns(client: Any, experiment_id: str, parent: str, arms: list[Arm]) -> str:
    """Each arm's finished rerun (a configuration run under the benchmark's sweeps) and its seeds' values;
    returns the objective's name."""
    metric = ""
    sweeps = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    for sweep_run in sweeps:
        configs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{sweep_run.info.run_id}' and "
            "tags.`sweeplab.kind` = 'configuration' and attributes.status = 'FINISHED'",
        )
        for config in configs:
            p = config.data.params
            arm = next(
                (a for a in arms if (a.loss, a.optimizer) == (p.get("loss"), p.get("optimizer"))), None
            )
            if arm is None or arm.samples:
                continue
            metric = config.data.tags.get("sweeplab.objective", metric)
            seeds = client.search_runs(
                [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{config.info.run_id}'"
            )
            arm.samples = {
                s.data.tags["sweeplab.member"]: s.data.metrics[f"best_{metric}"]
                for s in seeds
                if f"best_{metric}" in s.data.metrics
            }
            arm.run_id = config.info.run_id
    return metric
