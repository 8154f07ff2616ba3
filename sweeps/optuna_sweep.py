"""The sweeper's Optuna mode: ask a trial, run it through Hydra's launcher, tell the outcome, until the study
holds ``n_trials`` finished trials, the ``timeout`` passes or the failure budget is spent."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from sweeps import current_trial, report, search
from sweeps.errors import ConfigError
from sweeps.secrets import redact_text

log = logging.getLogger("sweeplab")


def run_search(sweep: Any, arguments: list[str], params: Any) -> list[list[JobReturn]]:
    settings = {k: _plain(v) for k, v in sweep.settings.items()}
    parser = OverridesParser.create(config_loader=sweep.hydra_context.config_loader)
    try:
        space = search.parse_space(parser, arguments, settings.get("params"))
        n_trials = int(settings.get("n_trials") or 0)
        if n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={settings.get('n_trials')} must be >= 1")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    name = settings.get("study_name") or search.study_name(space, arguments)

    def prepare(objective: tuple[str, str]) -> tuple[optuna.Study, str, str]:
        metric, mode = objective
        sampler = search.make("sampler", settings.get("sampler"), space)
        pruner = search.make("pruner", settings.get("pruner"), space)
        return search.open_study(settings, space, name, mode, sampler, pruner), metric, mode

    session, (study, metric, mode), sweep_dir = sweep.start(arguments, probes(space), prepare)
    if session:
        shown_storage = redact_text(str(settings.get("storage") or search.DEFAULT_STORAGE))
        session.send(
            "log", run=session.parent, tags={"sweeplab.study": name, "sweeplab.storage": shown_storage}
        )
    already = search.finished(study)
    log.info("search: study %s, %d of %d trials finished before -> %s", name, already, n_trials, sweep_dir)
    status = "KILLED"
    try:
        rows, results, gave_up = trials(sweep, study, space, name, n_trials, settings, metric)
        _resolve_runs(rows, results, session)
        sweep.report(rows, metric, mode, sweep_dir, session)
        best(study, space, name, metric, sweep_dir, session, settings)
        status = "FINISHED"
    finally:
        sweep.finish(session, status)
    if gave_up:
        print(f"error: {gave_up}", file=sys.stderr)
        raise SystemExit(1)
    return [results]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def probes(space: search.Space) -> list[list[str]]:
    """Configs to check before the first trial: each parameter at its bounds (or each choice)."""

    def corners(dist: Any) -> list[Any]:
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        return [dist.low, dist.high]

    base = {k: corners(d)[0] for k, d in space.distributions.items()}
    jobs = [space.overrides(base)]
    for key, dist in space.distributions.items():
        for value in corners(dist)[1:]:
            jobs.append(space.overrides({**base, key: value}))
    return jobs


def trials(
    sweep: Any,
    study: optuna.Study,
    space: search.Space,
    name: str,
    n_trials: int,
    settings: dict[str, Any],
    metric: str,
) -> tuple[list[report.Row], list[JobReturn], str]:
    """Run trials one at a time until the study is complete; returns rows, job returns, why it gave up."""
    timeout = settings.get("timeout")
    max_failures = settings.get("max_failures")
    fail_fast = bool(settings.get("fail_fast"))
    start = time.monotonic()
    rows: list[report.Row] = []
    results: list[JobReturn] = []
    failures = 0
    done = search.finished(study)
    while done < n_trials:
        if timeout and time.monotonic() - start > float(timeout):
            log.info("search: timeout (%ss) reached, no new trial starts", timeout)
            break
        trial = study.ask(space.distributions)
        search.claim(trial)
        current_trial.set_current(trial, name)
        began = time.monotonic()
        try:
            ret = sweep.launcher.launch([space.overrides(trial.params)], initial_job_idx=trial.number)[0]
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)  # interrupted: the next run of this command retries it
            study.enqueue_trial(trial.params)
            raise
        finally:
            current_trial.set_current(None)
        state, value, reason = outcome(ret)
        if reason:
            trial.set_user_attr("sweeplab.reason", reason)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        results.append(ret)
        done += state in search.FINISHED
        failures += state == TrialState.FAIL
        shown = {k: search._format(v) for k, v in trial.params.items()}
        epochs = getattr(ret.return_value, "epochs", 0) if state == TrialState.COMPLETE else 0
        label = {TrialState.COMPLETE: "FINISHED"}.get(state, state.name)
        rows.append(
            report.Row(
                trial.number,
                shown,
                label,
                value if value is not None else math.nan,
                epochs,
                time.monotonic() - began,
                reason,
            )
        )
        log.info(
            "search: trial %d %s%s (%d/%d finished)",
            trial.number,
            label.lower(),
            f" {metric}={value:.4f}" if value is not None else f": {reason}",
            done,
            n_trials,
        )
        if failures and (fail_fast or (max_failures is not None and failures >= int(max_failures))):
            budget = "fail_fast" if fail_fast else f"max_failures={max_failures}"
            return rows, results, f"the search gave up after {failures} failed trials ({budget})"
    return rows, results, ""


def outcome(ret: JobReturn) -> tuple[TrialState, float | None, str]:
    """Optuna's view of a job: COMPLETE with a finite value, PRUNED, or FAIL with the reason."""
    if ret.status == JobStatus.COMPLETED:
        value = float(ret.return_value)
        if math.isfinite(value):
            return TrialState.COMPLETE, value, ""
        return TrialState.FAIL, None, f"non-finite objective ({value})"
    err = ret._return_value
    if isinstance(err, optuna.TrialPruned):
        return TrialState.PRUNED, None, str(err)
    return TrialState.FAIL, None, redact_text(f"{type(err).__name__}: {err}".splitlines()[0])[:200]


def _resolve_runs(rows: list[report.Row], results: list[JobReturn], session: Any) -> None:
    if not session:
        return
    values = [r.return_value if r.status == JobStatus.COMPLETED else r._return_value for r in results]
    handles = [getattr(v, "run_handle", None) or getattr(v, "sweeplab_run", None) for v in values]
    ids = session.run_ids([h for h in handles if h])
    for row, handle in zip(rows, handles, strict=True):
        row.run_id = ids.get(handle, "")


def best(
    study: optuna.Study,
    space: search.Space,
    name: str,
    metric: str,
    sweep_dir: Path,
    session: Any,
    settings: dict[str, Any],
) -> None:
    """Print and keep the best trial of the whole study, and put Optuna's pictures on the parent run."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.warning("search: no trial of study %s has completed yet", name)
        return
    trial = study.best_trial
    summary = {
        "study": name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "value": trial.value,
        "trial": trial.number,
        "params": {k: trial.params[k] for k in sorted(trial.params)},
        "overrides": space.overrides(trial.params),
    }
    (sweep_dir / "best.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(summary)))
    params = " ".join(f"{k}={search._format(v)}" for k, v in trial.params.items())
    print(f"best of study {name}: {metric}={trial.value:.4f} (trial {trial.number}) with {params}")
    print(f"written to {sweep_dir / 'best.yaml'}", flush=True)
    if session:
        session.send("artifact", run=session.parent, path=str(sweep_dir / "best.yaml"))
        session.send(
            "optuna_plots",
            run=session.parent,
            storage=settings.get("storage") or search.DEFAULT_STORAGE,
            study=name,
            params=list(space.distributions),
        )
