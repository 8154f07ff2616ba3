"""What one ``python -m sweeps.run`` process trains: a single run, a job of a sweep in the sweeper's
process, a DDP job in a process group of its own, or a job that a launcher (submitit) started elsewhere.

Cheap checks come first and torch loads only after them (and after the tracking process was started, so
that the two overlap): bad values fail in one line before anything heavy is imported.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweeps.launch import ddp, submitit
from sweeps.outcome import Outcome
from sweeps.support.errors import ConfigError
from sweeps.tracking import session as tracking
from sweeps.training.checks import check_config, distributed
from sweeps.training.seeds import repeated

log = logging.getLogger("sweeplab")


def task(cfg: DictConfig) -> Outcome:
    """Hydra's task function: train ``cfg`` the way this process was started to."""
    hc = HydraConfig.get()
    job_spec = ddp.spec()
    if job_spec is not None:  # one process of a sweep's DDP job (``ddp``)
        sys.exit(ddp.run_rank(cfg, Path(hc.runtime.output_dir), job_spec))
    if hc.mode == RunMode.MULTIRUN:
        return sweep_job(cfg, hc)
    return single_run(cfg, hc)


def _identity(hc: Any, job: int | None) -> tuple[list[str], dict[str, Any], str]:
    """The job's overrides, its config group choices, and its run's name."""
    overrides = list(hc.overrides.task)
    choices: dict[str, Any] = OmegaConf.to_container(hc.runtime.choices)  # type: ignore[assignment]
    return overrides, choices, tracking.run_name(job, overrides)


def sweep_job(cfg: DictConfig, hc: Any) -> Outcome:
    """One job of a sweep: its outcome, whatever happens (a failure is an outcome, not an exception)."""
    job, output_dir = int(hc.job.num), Path(hc.runtime.output_dir)
    overrides, choices, name = _identity(hc, job)
    if distributed(cfg.trainer):
        return ddp.run(overrides, output_dir, job, name, choices)
    own = submitit.attach(cfg, hc)  # a trial in a job of its own (submitit)
    session = tracking.active() or own
    try:
        if repeated(cfg):  # one configuration over several seeds or folds (``training.repeats``)
            from sweeps.training.repeats import run_configuration

            return run_configuration(cfg, output_dir, job, name, overrides, choices, session)
        try:
            check_config(cfg)
            from sweeps.training.fit import prepare  # torch and Lightning load here

            built = prepare(cfg)
            record = session.begin_run(cfg, name, job, overrides, choices) if session else None
        except Exception as err:  # noqa: BLE001 - bad input of one job: the sweep goes on
            failed = Outcome.of_error(err)
            log.error("[job %d] FAILED: %s", job, failed.reason)
            return failed
        from sweeps.training.record import run_trial

        outcome = run_trial(cfg, built, output_dir, job, record)
        if own and record:  # the sweeper's process knows the run by its id, not by our handle
            outcome = outcome.replace(run_id=record.run_id)
        return outcome
    except BaseException as err:
        if _preempted(err) and own:
            own.close()  # before the hand-over: submitit's handler exits
            own = None
        _leave_if_preempted(err)
        raise
    finally:
        if own:
            own.close()


def _preempted(err: BaseException) -> bool:
    preemption = sys.modules.get("sweeps.training.preemption")  # loaded if training started
    return preemption is not None and isinstance(err, preemption.Preempted)


def _leave_if_preempted(err: BaseException) -> None:
    """Stopped by a scheduler's signal: the checkpoint is written and the run KILLED; hand over and exit."""
    if _preempted(err):
        log.warning("%s", err)
        err.exit()  # type: ignore[attr-defined]


def single_run(cfg: DictConfig, hc: Any) -> Outcome:
    """``python -m sweeps.run [overrides]``: train and print the result; exit 2 on bad input, 1 if it
    diverged."""
    output_dir = Path(hc.runtime.output_dir)
    overrides, choices, name = _identity(hc, None)
    session = None
    try:
        try:
            check_config(cfg)  # cheap checks first: bad values fail before torch is even imported
            if ddp.first_process():  # DDP: the other processes do not record
                session = tracking.start(cfg.tracking)  # the store opens while torch loads
            if repeated(cfg):  # several seeds or folds of one configuration (``training.repeats``)
                return _repeated(cfg, output_dir, name, overrides, choices, session)
            from sweeps.training.fit import prepare

            built = prepare(cfg)
            record = session.begin_run(cfg, name, None, overrides, choices) if session else None
        except ConfigError as err:
            _refuse(output_dir, err)
        outcome = _fit(cfg, built, output_dir, record)
        recorded = (
            f"recorded as MLflow run {record.run_id} in {session.shown_uri}" if session and record else ""
        )
    finally:
        if session:
            session.close()
    if ddp.first_process():
        print(
            f"{outcome.metric} ({outcome.mode}) = {outcome.value:.4f} after {outcome.epochs} epochs "
            f"in {outcome.seconds:.1f}s\n{format_metrics(outcome.metrics)}"
        )
        if recorded:
            print(recorded)
    return outcome


def _repeated(
    cfg: DictConfig, output_dir: Path, name: str, overrides: list[str], choices: dict, session: Any
) -> Outcome:
    """``python -m sweeps.run repeats=N`` (or ``seeds``, ``cv``): print the mean +- its 95% interval."""
    from sweeps.training.repeats import describe, run_configuration

    outcome = run_configuration(cfg, output_dir, None, name, overrides, choices, session)
    print(describe(outcome))
    if session and outcome.run_id:
        print(f"recorded as MLflow run {outcome.run_id} in {session.shown_uri}")
    if not outcome.complete:
        sys.exit(1)
    return outcome


def _fit(cfg: DictConfig, built: Any, output_dir: Path, record: Any) -> Outcome:
    from lightning_modules.module import NonFiniteLoss
    from sweeps.training.record import fit_recorded

    try:
        return fit_recorded(cfg, built, output_dir, None, record)
    except NonFiniteLoss as err:  # diverged: not a bug, so one line rather than a traceback
        print(f"error: training diverged: {err}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as err:  # found in training (a user module's objective is not logged): run FAILED
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except BaseException as err:
        _leave_if_preempted(err)
        raise


def _refuse(output_dir: Path, err: ConfigError) -> NoReturn:
    """Bad input: one line, exit code 2, and no run folder left behind (Hydra made it before we could
    check anything)."""
    if output_dir.is_dir() and all(p.suffix == ".log" for p in output_dir.iterdir()):
        shutil.rmtree(output_dir, ignore_errors=True)
    print(f"error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)


def format_metrics(metrics: dict[str, float]) -> str:
    keys = sorted(k for k in metrics if k.startswith(("val_", "test_", "train_")))
    return "\n".join(f"  {k:<16} {metrics[k]:.4f}" for k in keys)
