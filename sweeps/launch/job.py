"""How each way of starting a job delivers ``(cfg, ctx)`` to ``training.job.run_job``.

- ``python -m sweeps.run [overrides]`` (a single run): ``task`` -> ``single_run``, which opens the tracking
  session, runs the job and turns its outcome into what the command prints and its exit code.
- A job of a sweep in the sweeper's process: the sweeper hands Hydra's launcher a ``JobRunner`` instead of
  the bare task function; it knows the sweep's tracking session, the current trial and the deadline.
- A job a launcher runs elsewhere (submitit, Slurm): ``task`` in MULTIRUN mode, which attaches to the sweep
  from what the sweeper published in the job's Hydra overrides (``submitit``).
- A DDP rank: ``task`` with the job's spec in the environment (``ddp``). A worker process: ``workers``.

A DDP job of a sweep trains in a process group of its own (``deliver``).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweeps.launch import ddp, submitit
from sweeps.outcome import Outcome, State, is_test_metric
from sweeps.support import interrupt, renames
from sweeps.support.errors import ConfigError, TrackingError
from sweeps.tracking import session as tracking
from sweeps.training import seeds
from sweeps.training.checks import check_config, distributed
from sweeps.training.context import JobContext, TrialHandle
from sweeps.training.job import ERROR_FILE, resolved, run_job
from sweeps.training.keys import check_additions

TASK_MARK = "sweeplab_task"  # set on the task function of ``sweeps.run``


def sweeplab_task(function: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Marks a Hydra task function as sweeplab's: the sweeper then runs its jobs with ``run_job``."""
    setattr(function, TASK_MARK, True)
    return function


def task(cfg: DictConfig) -> Outcome:
    """Hydra's task function: train ``cfg`` the way this process was started to."""
    hc = HydraConfig.get()
    job_spec = ddp.spec()
    if job_spec is not None:  # one process of a sweep's DDP job (``ddp``)
        sys.exit(ddp.run_rank(cfg, job_spec))
    if hc.mode == RunMode.MULTIRUN:  # a job that a launcher (submitit) runs in a process of its own
        return _job_elsewhere(cfg, hc)
    return single_run(cfg, hc)


def context_of(hc: Any, job: int | None, **handles: Any) -> JobContext:
    """The job's context from Hydra's runtime config: its folder, overrides, group choices and run name."""
    overrides = list(hc.overrides.task)
    choices: dict[str, Any] = OmegaConf.to_container(hc.runtime.choices)  # type: ignore[assignment]
    name = tracking.run_name(job, overrides)
    return JobContext(Path(hc.runtime.output_dir), job, name, tuple(overrides), choices, **handles)


def deliver(cfg: DictConfig, ctx: JobContext) -> Outcome:
    """A job of a sweep, where it must train: a DDP trainer in a process group of its own, else here."""
    if distributed(cfg.trainer):
        return ddp.run(ctx, ddp.ranks(cfg.trainer))
    assert ctx.output_dir is not None  # a sweep's job has its folder
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    return run_job(cfg, ctx)


class JobRunner:
    """The task function Hydra's launcher calls for a sweep's jobs in the sweeper's process: it delivers
    each job with the sweep's tracking session, the trial being run and the deadline. Another app's task
    function (a user's ``@hydra.main`` with sweeplab's sweeper) is called as it is."""

    def __init__(self, task_function: Callable[[DictConfig], Any]) -> None:
        self.task_function = task_function
        self.ours = bool(getattr(task_function, TASK_MARK, False))
        self.tracker: tracking.Session | None = None
        self.trial: TrialHandle | None = None
        self.deadline: float | None = None

    def __call__(self, cfg: DictConfig) -> Any:
        if not self.ours:
            return self.task_function(cfg)
        hc = HydraConfig.get()
        ctx = context_of(hc, int(hc.job.num), tracker=self.tracker, trial=self.trial, deadline=self.deadline)
        try:
            return deliver(cfg, ctx)
        except BaseException as err:
            _leave_if_preempted(err)
            raise


def _job_elsewhere(cfg: DictConfig, hc: Any) -> Outcome:
    """A job a launcher started in a process of its own: joined to the sweep and its trial, then run."""
    tracker, trial = submitit.attach(cfg, hc)
    ctx = context_of(hc, int(hc.job.num), tracker=tracker, trial=trial, deadline=submitit.deadline(hc))
    try:
        outcome = resolved(deliver(cfg, ctx), tracker)  # the sweeper's process knows the run by its id
    except BaseException as err:
        if tracker is not None and _preempted(err):
            tracker.close()  # before the hand-over: submitit's handler exits
            tracker = None
        _leave_if_preempted(err)
        raise
    finally:
        if tracker is not None:
            tracker.close()
    return outcome


def _preempted(err: BaseException) -> bool:
    preemption = sys.modules.get("sweeps.training.preemption")  # loaded if training started
    return preemption is not None and isinstance(err, preemption.Preempted)


def _leave_if_preempted(err: BaseException) -> None:
    """Stopped by a scheduler's signal: the checkpoint is written and the run KILLED; hand over and exit."""
    if _preempted(err):
        err.exit()  # type: ignore[attr-defined]


def single_run(cfg: DictConfig, hc: Any) -> Outcome:
    """``python -m sweeps.run [overrides]``: train and print the result; exit 2 on bad input, 1 if it
    failed (its traceback is in the run folder's ``error.txt``)."""
    renames.say(hc.runtime.choices)  # a sweep's jobs do not repeat what its sweeper has said once
    output_dir = Path(hc.runtime.output_dir)
    first = ddp.first_process()  # DDP: the other processes do not record
    tracker = None
    try:
        try:
            check_additions(hc.overrides.task, cfg, hc.runtime.choices)  # +lrr=0.01: nothing reads it
            check_config(cfg)  # cheap checks first: bad values fail before anything starts
            tracker = tracking.start(cfg.tracking) if first else None  # opens while torch loads
        except ConfigError as err:
            _refuse(output_dir, str(err))
        except TrackingError as err:  # the tracking process died at start-up: one line, exit 1
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        outcome = resolved(run_job(cfg, context_of(hc, None, tracker=tracker, first_rank=first)), tracker)
    except BaseException as err:
        if isinstance(err, interrupt.Interrupted):
            err.kept = "the run is recorded as KILLED; run the same command to train it again"
        _leave_if_preempted(err)
        raise
    finally:
        if tracker is not None:
            tracker.close()
    if outcome.bad_input:
        _refuse(output_dir, outcome.message)
    if not first:  # a DDP rank but the first: the first one says it all
        if outcome.state is State.FAILED:
            sys.exit(1)
        return outcome
    repeated = seeds.repeated(cfg)
    if repeated:  # several seeds or folds of one configuration: the mean +- its 95% interval
        from sweeps.training.repeats import describe

        print(describe(outcome))
    elif outcome.state is State.FINISHED:
        print(
            f"{outcome.metric} ({outcome.mode}) = {outcome.value:.4f} after {outcome.epochs} epochs "
            f"in {outcome.seconds:.1f}s\n{format_metrics(outcome.metrics)}"
        )
    if tracker is not None and outcome.run_id:
        print(f"recorded as MLflow run {outcome.run_id} in {tracker.shown_uri}")
    if repeated and not outcome.complete:
        sys.exit(1)
    if not repeated and outcome.state is not State.FINISHED:
        _fail(output_dir, outcome)
    return outcome


def _fail(output_dir: Path, outcome: Outcome) -> NoReturn:
    """A run that failed: one line (a diverged run says so), where its traceback is, exit code 1."""
    said = f"training diverged: {outcome.message}" if outcome.error == "NonFiniteLoss" else outcome.reason
    where = output_dir / ERROR_FILE
    more = f" (details in {where})" if where.exists() and outcome.error != "NonFiniteLoss" else ""
    print(f"error: {said}{more}", file=sys.stderr)
    sys.exit(1)


def _refuse(output_dir: Path, message: str) -> NoReturn:
    """Bad input: one line, exit code 2, and no run folder left behind (Hydra made it before we could
    check anything)."""
    (output_dir / ERROR_FILE).unlink(missing_ok=True)
    if output_dir.is_dir() and all(p.suffix == ".log" for p in output_dir.iterdir()):
        shutil.rmtree(output_dir, ignore_errors=True)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(ConfigError.exit_code)


def format_metrics(metrics: dict[str, float]) -> str:
    keys = sorted(
        k for k in metrics if is_test_metric(k) or k.startswith(("val_", "train_", "val/", "train/"))
    )
    return "\n".join(f"  {k:<16} {metrics[k]:.4f}" for k in keys)
