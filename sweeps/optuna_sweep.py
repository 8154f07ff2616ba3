"""The sweeper's Optuna mode: ask a trial, run it through Hydra's launcher, tell the outcome, until the study
holds ``n_trials`` finished trials, the ``timeout`` passes, the next trial would not end before the
``deadline``, or the failure budget is spent."""

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
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from sweeps import current_trial, gpus, job_context, report, search, shared
from sweeps.deadline import DeadlineReached, expected_duration, set_deadline
from sweeps.errors import ConfigError
from sweeps.secrets import redact_text
from sweeps.sweeper import job_value, run_handle

log = logging.getLogger("sweeplab")


def run_search(sweep: Any, arguments: list[str], params: Any) -> list[list[JobReturn]]:
    settings = {k: _plain(v) for k, v in sweep.settings.items()}
    parser = OverridesParser.create(config_loader=sweep.hydra_context.config_loader)
    try:
        space = search.parse_space(parser, arguments, settings.get("params"))
        n_trials = int(settings.get("n_trials") or 0)
        if n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={settings.get('n_trials')} must be >= 1")
        n_jobs = int(settings.get("n_jobs") or 1)
        devices = gpus.for_workers(
            n_jobs, sweep.config.get("trainer") or {}, int(settings.get("trials_per_gpu") or 1)
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    name = settings.get("study_name") or search.study_name(space, arguments)

    def prepare(objective: tuple[str, str]) -> tuple[optuna.Study, str, str]:
        metric, mode = objective
        sampler = search.make("sampler", settings.get("sampler"), space)
        pruner = search.make("pruner", settings.get("pruner"), space)
        return search.open_study(settings, space, name, mode, sampler, pruner), metric, mode

    url = search.storage_url(settings)
    shared_study = "://" in url  # a database: workers anywhere may share the study and one parent run

    def parent(session: Any, prepared: tuple, start: Any) -> None:
        shared.join_or_start(prepared[0], url, session, start)

    session, (study, metric, mode), sweep_dir = sweep.start(
        arguments, probes(space), prepare, parent if shared_study else None
    )
    if session:
        shown_storage = redact_text(str(settings.get("storage") or search.DEFAULT_STORAGE))
        session.send(
            "log", run=session.parent, tags={"sweeplab.study": name, "sweeplab.storage": shown_storage}
        )
    already = search.finished(study)
    log.info("search: study %s, %d of %d trials finished before -> %s", name, already, n_trials, sweep_dir)
    ledger = Ledger(study, n_trials, settings, metric)
    set_deadline(settings.get("deadline"))  # read by the trials' StopAtDeadline callback
    if session:
        ledger.on_stale = lambda numbers: session.send(
            "kill_trial_runs", study=name, trials=[str(n) for n in numbers]
        )
    if session and shared_study:
        # A machine may die with tracking writes in flight: a trial is told to Optuna only once its MLflow
        # run is closed, so that a finished trial never has a run left RUNNING.
        ledger.sync_runs = session.run_ids
    closing = True  # whether this process reports on and closes the parent run
    job_context.publish(sweep.config, study=name)  # for trials run elsewhere (submitit)
    status = "KILLED"
    results: list[JobReturn] = []
    try:
        if n_jobs > 1 and type(sweep.launcher).__name__ != "BasicLauncher":
            results = launcher_trials(sweep, study, space, ledger, n_jobs)
        elif n_jobs > 1:
            setup = {
                "tracking": OmegaConf.to_container(sweep.config.tracking, resolve=True),
                "sweep_id": session.sweep_id if session else None,
                "study": name,
                "storage": settings.get("storage") or search.DEFAULT_STORAGE,
                "pruner": settings.get("pruner"),
                "deadline": settings.get("deadline"),
            }
            parallel_trials(sweep, study, space, name, ledger, devices, setup)
        else:
            results = trials(sweep, study, space, name, ledger)
        if session and ledger.handles:
            session.fill_run_ids(*zip(*ledger.handles, strict=True))
        rows = ledger.rows
        if shared_study and session:
            closing = shared.last_out(study, url, session)
            rows = shared.study_rows(study, ledger.rows) if closing else rows
        sweep.report(rows, metric, mode, sweep_dir, session if closing else None)
        best(study, space, name, metric, sweep_dir, session if closing else None, settings)
        status = "FINISHED"
    finally:
        if status != "FINISHED" and shared_study and session:
            closing = _last_out_quietly(study, url, session)
        sweep.finish(session, status) if closing else session.close()
    if ledger.gave_up:
        print(f"error: {ledger.gave_up}", file=sys.stderr)
        raise SystemExit(1)
    return [results]


def _last_out_quietly(study: optuna.Study, url: str, session: Any) -> bool:
    try:
        return shared.last_out(study, url, session)
    except Exception:  # noqa: BLE001 - going down already: leave the parent to the other workers
        return False


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


class Ledger:
    """Tells Optuna each trial's outcome, keeps the leaderboard rows, and watches the failure budget."""

    def __init__(self, study: optuna.Study, n_trials: int, settings: dict[str, Any], metric: str) -> None:
        self.study, self.n_trials, self.metric = study, n_trials, metric
        self.max_failures = settings.get("max_failures")
        self.fail_fast = bool(settings.get("fail_fast"))
        self.timeout = settings.get("timeout")
        self.start = time.monotonic()
        self.done = search.finished(study)
        self.failures = 0
        self.deadline = settings.get("deadline")  # Unix time: no trial starts that would not end before it
        self.stopped = 0  # trials stopped by the deadline
        self.rows: list[report.Row] = []
        self.handles: list[tuple[report.Row, str | None]] = []  # rows of in-process trials, for their run ids
        self.gave_up = ""
        self.url = search.storage_url(settings)
        self.on_stale: Any = None  # closes the MLflow runs of trials failed as stale (run_search sets it)
        self.sync_runs: Any = None  # waits for the tracking writes of runs (shared studies: run_search)

    def next_trial(self, distributions: dict[str, Any], wait: bool = True) -> optuna.Trial | None:
        """The study's next trial, claimed safely among every worker on the study (sweeps/shared.py)."""
        return shared.next_trial(
            self.study, self.url, distributions, self.n_trials, wait, self.may_start, self.on_stale
        )

    def may_start(self, running: int = 0) -> bool:
        if self.gave_up or self.done + running >= self.n_trials:
            return False
        if self.timeout and time.monotonic() - self.start > float(self.timeout):
            if not running:
                log.info("search: timeout (%ss) reached, no new trial starts", self.timeout)
            return False
        if self.deadline and not self.fits(running):
            return False
        return True

    def fits(self, running: int) -> bool:
        """Whether a trial started now ends before the deadline, by the median duration of the study's
        completed trials so far (all finished ones while none has completed)."""
        left = float(self.deadline) - time.time()
        trials = self.study.get_trials(deepcopy=False, states=search.FINISHED)
        complete = [t for t in trials if t.state == TrialState.COMPLETE] or trials
        need = expected_duration([t.duration.total_seconds() for t in complete if t.duration])
        if left > need:
            return True
        if not running and left <= 0:
            log.info("search: deadline reached, no new trial starts")
        elif not running:
            log.info("search: deadline in %.0fs, a trial takes ~%.0fs: no new trial starts", left, need)
        return False

    def settle(
        self,
        trial: optuna.Trial,
        state: TrialState,
        value: float | None,
        reason: str,
        epochs: int,
        began: float,
    ) -> report.Row:
        stopped = reason.startswith(DeadlineReached.__name__)
        if self.study._storage.get_trial(trial._trial_id).state.is_finished():
            # Another worker took it for dead (no heartbeat within the grace period): it runs again there.
            log.warning("search: trial %d was failed as stale meanwhile; its result is dropped", trial.number)
            state, value, reason = TrialState.FAIL, None, "failed as stale by another worker"
            stopped = False
        else:
            if reason:
                trial.set_user_attr("sweeplab.reason", reason)
            if stopped:
                trial.set_user_attr("sweeplab.stopped", "deadline")
            self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            if stopped:  # not the trial's fault: the next run of this study runs it again
                self.study.enqueue_trial(trial.params, user_attrs={"sweeplab.retry_of": trial.number})
        shared.release(self.study, trial._trial_id)
        self.done += state in search.FINISHED
        self.failures += state == TrialState.FAIL and not stopped
        self.stopped += stopped
        shown = {k: search.format_value(v) for k, v in trial.params.items()}
        label = "STOPPED" if stopped else {TrialState.COMPLETE: "FINISHED"}.get(state, state.name)
        row = report.Row(
            trial.number,
            shown,
            label,
            value if value is not None else math.nan,
            epochs,
            time.monotonic() - began,
            reason,
        )
        self.rows.append(row)
        log.info(
            "search: trial %d %s%s (%d/%d finished)",
            trial.number,
            label.lower(),
            f" {self.metric}={value:.4f}" if value is not None else f": {reason}",
            self.done,
            self.n_trials,
        )
        if self.failures and (
            self.fail_fast or (self.max_failures is not None and self.failures >= int(self.max_failures))
        ):
            budget = "fail_fast" if self.fail_fast else f"max_failures={self.max_failures}"
            self.gave_up = f"the search gave up after {self.failures} failed trials ({budget})"
        return row


def trials(
    sweep: Any, study: optuna.Study, space: search.Space, name: str, ledger: Ledger
) -> list[JobReturn]:
    """One trial at a time, in this process, through Hydra's launcher."""
    results: list[JobReturn] = []
    while ledger.may_start():
        trial = ledger.next_trial(space.distributions)
        if trial is None:
            break
        storage = sweep.settings.get("storage") or search.DEFAULT_STORAGE
        current_trial.set_current(trial, name, storage, _plain(sweep.settings.get("pruner")))
        began = time.monotonic()
        try:
            ret = sweep.launcher.launch([space.overrides(trial.params)], initial_job_idx=trial.number)[0]
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)  # interrupted: the next run of this command retries it
            shared.release(study, trial._trial_id)
            study.enqueue_trial(trial.params)
            raise
        finally:
            current_trial.set_current(None)
        state, value, reason = outcome(ret)
        epochs = getattr(ret.return_value, "epochs", 0) if state == TrialState.COMPLETE else 0
        if ledger.sync_runs and run_handle(ret):
            ledger.sync_runs([run_handle(ret)])  # its MLflow run is closed before Optuna hears of it
        row = ledger.settle(trial, state, value, reason, epochs, began)
        ledger.handles.append((row, run_handle(ret)))
        results.append(ret)
    return results


def launcher_trials(
    sweep: Any, study: optuna.Study, space: search.Space, ledger: Ledger, n_jobs: int
) -> list[JobReturn]:
    """Batches of ``n_jobs`` trials through a launcher that runs them elsewhere (``hydra/launcher=
    submitit_local`` or ``slurm``: local processes or Slurm jobs). Hydra's launcher API returns when the
    whole batch is done, so the next batch starts then. Each job is told its trial number and writes to
    the trial's folder (the numbers in a batch need not follow each other when workers share the study)."""
    results: list[JobReturn] = []
    while ledger.may_start():
        batch: list[optuna.Trial] = []
        while len(batch) < n_jobs and ledger.may_start(len(batch)):
            trial = ledger.next_trial(space.distributions, wait=not batch)
            if trial is None:
                break
            batch.append(trial)
        if not batch:
            break
        jobs = [
            [
                *space.overrides(t.params),
                job_context.override("trial", t.number),
                f"hydra.sweep.subdir={t.number}",
            ]
            for t in batch
        ]
        began = time.monotonic()
        try:
            returns = sweep.launcher.launch(jobs, initial_job_idx=batch[0].number)
        except BaseException:
            for trial in batch:  # interrupted: the next run of this command retries them
                study.tell(trial, state=TrialState.FAIL)
                shared.release(study, trial._trial_id)
                study.enqueue_trial(trial.params)
            raise
        for trial, ret in zip(batch, returns, strict=True):
            state, value, reason = outcome(ret)
            epochs = getattr(ret.return_value, "epochs", 0) if state == TrialState.COMPLETE else 0
            row = ledger.settle(trial, state, value, reason, epochs, began)
            ledger.handles.append((row, run_handle(ret)))
            results.append(ret)
    return results


def parallel_trials(
    sweep: Any,
    study: optuna.Study,
    space: search.Space,
    name: str,
    ledger: Ledger,
    devices: list[str | None],
    setup: dict,
) -> None:
    """A trial per worker at once (``devices``: each worker's GPUs); a new one starts as soon as any ends."""
    from sweeps.run import run_name
    from sweeps.workers import Workers

    sweep_dir = Path(sweep.config.hydra.sweep.dir)
    workers = Workers(len(devices), setup, devices)
    running: dict[int, tuple[optuna.Trial, float]] = {}
    try:
        while True:
            for i in workers.idle():
                if not ledger.may_start(len(running)):
                    break
                trial = ledger.next_trial(space.distributions, wait=not running)
                if trial is None:
                    break
                overrides = space.overrides(trial.params)
                job_cfg = sweep.job_config(overrides)
                choices = OmegaConf.to_container(job_cfg.hydra.runtime.choices) if "hydra" in job_cfg else {}
                with open_dict(job_cfg):
                    del job_cfg["hydra"]
                workers.submit(
                    i,
                    {
                        "trial_id": trial._trial_id,
                        "config": OmegaConf.to_container(job_cfg, resolve=True),
                        "output_dir": str(sweep_dir / str(trial.number)),
                        "overrides": overrides,
                        "choices": choices,
                        "name": run_name(trial.number, overrides),
                    },
                )
                running[i] = (trial, time.monotonic())
            if not running:
                return
            for i, answer in workers.wait():
                trial, began = running.pop(i)
                kind, *rest = answer
                if kind == "ok":
                    value, epochs, _, run_id = rest
                    row = ledger.settle(trial, TrialState.COMPLETE, value, "", epochs, began)
                elif kind == "pruned":
                    row = ledger.settle(trial, TrialState.PRUNED, None, rest[0], 0, began)
                    run_id = rest[1]
                else:
                    reason = redact_text(rest[0])[:200]
                    row = ledger.settle(trial, TrialState.FAIL, None, reason, 0, began)
                    run_id = rest[1] if len(rest) > 1 else ""
                row.run_id = run_id
    finally:
        workers.close()


def outcome(ret: JobReturn) -> tuple[TrialState, float | None, str]:
    """Optuna's view of a job: COMPLETE with a finite value, PRUNED, or FAIL with the reason."""
    if ret.status == JobStatus.COMPLETED:
        value = float(ret.return_value)
        if math.isfinite(value):
            return TrialState.COMPLETE, value, ""
        return TrialState.FAIL, None, f"non-finite objective ({value})"
    err = job_value(ret)
    if isinstance(err, optuna.TrialPruned):
        return TrialState.PRUNED, None, str(err)
    return TrialState.FAIL, None, redact_text(f"{type(err).__name__}: {err}".splitlines()[0])[:200]


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
    params = " ".join(f"{k}={search.format_value(v)}" for k, v in trial.params.items())
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
