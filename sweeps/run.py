"""Command line: ``python -m sweeps.run [overrides]`` trains one configuration; add ``-m`` to sweep.

Examples:
    python -m sweeps.run                                   # the default: digits, MLP, cross-entropy, Adam
    python -m sweeps.run -m optimizer=adam,sgd lr=1e-3,1e-2  # a grid, one run per combination
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweeps import current_trial, isolated, job_context, tracking
from sweeps.checks import check_config, distributed
from sweeps.deadline import DeadlineReached, deadline
from sweeps.errors import ConfigError
from sweeps.secrets import redact_log_records, redact_override, redact_text

log = logging.getLogger("sweeplab")
redact_log_records()  # before Hydra's launcher logs the job overrides


def format_metrics(metrics: dict[str, float]) -> str:
    keys = sorted(k for k in metrics if k.startswith(("val_", "test_", "train_")))
    return "\n".join(f"  {k:<16} {metrics[k]:.4f}" for k in keys)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    job = int(hc.job.num) if multirun else None
    output_dir = Path(hc.runtime.output_dir)
    job_spec = isolated.spec()
    if job_spec is not None:  # one process of a sweep's DDP job (see sweeps/isolated.py)
        sys.exit(isolated.serve(cfg, output_dir, job_spec))
    if multirun and distributed(cfg.trainer):
        overrides = list(hc.overrides.task)
        choices = OmegaConf.to_container(hc.runtime.choices)
        return isolated.run(overrides, output_dir, job, run_name(job, overrides), choices)
    session = tracking.active() if multirun else None
    own = job_context.attach(cfg, hc) if multirun else None  # a trial in a job of its own (submitit)
    session = session or own
    try:
        try:
            check_config(cfg)  # cheap checks first: bad values fail before torch is even imported
            if not multirun and isolated.first_process():  # DDP: the other processes do not record
                session = tracking.start(cfg.tracking)  # the store opens while torch loads
            from sweeps.train import prepare  # torch and Lightning load here, not for --help

            built = prepare(cfg)
            record = None
            if session:
                overrides = list(hc.overrides.task)
                choices = OmegaConf.to_container(hc.runtime.choices)
                record = session.begin_run(cfg, run_name(job, overrides), job, overrides, choices)
        except ConfigError as err:
            if multirun:
                raise
            _discard(output_dir)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        try:
            result = run_tracked(cfg, built, output_dir, job, record)
            if own and record:  # the sweeper's process knows the run by its id, not by our handle
                result.sweeplab_run = record.run_id
        except Exception as err:
            from lightning_modules.module import NonFiniteLoss  # loaded by now

            if own and record:
                err.sweeplab_run = record.run_id  # type: ignore[attr-defined]

            if multirun or not isinstance(err, NonFiniteLoss):
                raise
            # Diverged: not a bug, so one line rather than a traceback.
            print(f"error: training diverged: {err}", file=sys.stderr)
            sys.exit(1)
        except BaseException as err:
            if type(err).__name__ == "Preempted":  # stopped by the scheduler: checkpointed, run KILLED
                log.warning("%s", err)
                if own:
                    own.close()
                    own = None
                err.exit()  # type: ignore[attr-defined]
            raise
        recorded = (
            f"recorded as MLflow run {record.run_id} in {session.shown_uri}"
            if record and not multirun
            else ""
        )
    finally:
        if session and not multirun:
            session.close()
        if own:
            own.close()
    if not multirun and isolated.first_process():
        print(
            f"{result.metric} ({result.mode}) = {float(result):.4f} after {result.epochs} epochs "
            f"in {result.seconds:.1f}s\n{format_metrics(result.metrics)}"
        )
        if recorded:
            print(recorded)
    return result


def run_tracked(
    cfg: DictConfig,
    built: Any,
    output_dir: Path,
    job: int | None,
    record: Any,
    extra: Sequence[Any] = (),
) -> Any:
    """Fit, and close the MLflow run with the outcome: FINISHED, FAILED (with the reason) or KILLED."""
    from lightning_modules.callbacks import EpochEnd
    from sweeps.train import fit

    prefix = "" if job is None else f"[job {job}] "
    if record and getattr(built, "lineage", None):  # stage=finetune: the run it started from
        record.session.send("log", run=record.handle, **built.lineage)
    callbacks = [EpochEnd(record.epoch)] if record else []
    callbacks.extend(extra)
    trial = current_trial.current()
    if trial:
        from sweeps.pruning import OptunaPruning, StopAtDeadline

        callbacks.append(OptunaPruning(trial.trial, built.metric))
        if deadline():
            callbacks.append(StopAtDeadline(deadline()))
    try:
        result = fit(cfg, built, output_dir, prefix, callbacks)
    except BaseException as err:
        pruned = type(err).__name__ == "Pruned"
        stopped = isinstance(err, DeadlineReached)
        if record:
            state = "PRUNED" if pruned else "STOPPED" if stopped else "FAILED"
            record.fail(err, state if isinstance(err, Exception) else "KILLED")
            err.sweeplab_run = record.handle  # type: ignore[attr-defined]
        if pruned or stopped:
            log.info("%s%s", prefix, err)
        elif job is not None and isinstance(err, Exception):
            # The sweep goes on: keep the traceback beside the job's outputs, say it in one line.
            (output_dir / "error.txt").write_text(redact_text(traceback.format_exc()))
            log.error("%sFAILED: %s: %s", prefix, type(err).__name__, err)
        raise
    if record:
        record.finish(result)
        result.sweeplab_run = record.handle
    if job is not None:
        log.info(
            "%sdone: %s = %.4f (%d epochs, %.1fs)",
            prefix,
            result.metric,
            result,
            result.epochs,
            result.seconds,
        )
    return result


def run_name(job: int | None, overrides: list[str]) -> str:
    """What the MLflow UI lists: the job number and its overrides (secrets masked)."""
    shown = " ".join(redact_override(o) for o in overrides) or "defaults"
    return (shown if job is None else f"{job}: {shown}")[:250]


def _discard(output_dir: Path) -> None:
    """Bad input: leave no run folder behind (Hydra made it before we could check anything)."""
    if output_dir.is_dir() and all(p.suffix == ".log" for p in output_dir.iterdir()):
        shutil.rmtree(output_dir, ignore_errors=True)


def exit_now(code: int | str | None) -> NoReturn:
    """Leave without tearing every module down: with torch and Lightning loaded that takes 1.5 s here, and
    there is nothing left to do. Exit handlers still run (log files flush, child processes are reaped)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)
