"""Fit one prepared run and record how it ended: its MLflow run is closed with the outcome, whatever
happens (FINISHED, PRUNED, STOPPED, FAILED with the reason, or KILLED)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_modules.callbacks import EpochEnd
from sweeps.outcome import Outcome, State
from sweeps.support.context import current_trial, deadline
from sweeps.support.secrets import redact_text
from sweeps.training import lora, lr_find
from sweeps.training.build import Built
from sweeps.training.callbacks import OptunaPruning, StopAtDeadline
from sweeps.training.datasets import describe
from sweeps.training.fit import fit

log = logging.getLogger("sweeplab")


def _callbacks(built: Built, record: Any, extra: Sequence[Any]) -> list[Any]:
    """Per-epoch tracking, then ``extra``, then the current trial's pruning and the sweep's deadline."""
    callbacks: list[Any] = [EpochEnd(record.epoch)] if record else []
    callbacks.extend(extra)
    trial = current_trial()
    if trial:
        callbacks.append(OptunaPruning(trial.trial, built.metric))
        at = deadline()
        if at:
            callbacks.append(StopAtDeadline(at))
    return callbacks


def parameter_counts(module: Any) -> dict[str, str]:
    """How many parameters the network has, and how many of them train (frozen blocks, adapters)."""
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"params_total": str(total), "params_trainable": str(trainable)}


def fit_recorded(
    cfg: DictConfig,
    built: Built,
    output_dir: Path | None,
    job: int | None,
    record: Any,
    extra: Sequence[Any] = (),
) -> Outcome:
    """Fit, and close ``record`` (a ``RunRecord``, or None without tracking) with the outcome. An error
    propagates once the run is closed; ``run_id`` of the outcome is the record's handle."""
    prefix = "" if job is None else f"[job {job}] "
    if record and built.lineage:  # stage=finetune, model=hf: where its weights came from
        record.session.send("log", run=record.handle, **built.lineage)
    if record:
        record.session.send("log", run=record.handle, params=parameter_counts(built.module))
    described = describe(built.datamodule, OmegaConf.to_yaml(cfg.data, resolve=True)) if record else []
    if described:
        record.datasets(described)
    try:
        if lr_find.is_lr_find(cfg):
            outcome = lr_find.run(cfg, built, output_dir, record, prefix)
        else:
            outcome = fit(cfg, built, output_dir, prefix, _callbacks(built, record, extra))
    except BaseException as err:
        if record:
            record.end(Outcome.of_error(err))
        raise
    if record:
        if record.session.log_model and outcome.state is State.FINISHED:
            from sweeps.training.export import export

            record.model(export(built, output_dir, merge=bool(lora.settings(cfg).get("merge", False))))
        if outcome.state is State.FINISHED:  # finetune.lora: the adapter's safetensors, as artifacts
            lora.log_adapter(cfg, built, output_dir, record)
        record.finish(outcome)
        outcome = outcome.replace(run_id=record.handle)
    if job is not None:
        log.info(
            "%sdone: %s = %.4f (%d epochs, %.1fs)",
            prefix,
            outcome.metric,
            outcome.value,
            outcome.epochs,
            outcome.seconds,
        )
    return outcome


def run_trial(
    cfg: DictConfig,
    built: Built,
    output_dir: Path,
    job: int | None,
    record: Any,
    extra: Sequence[Any] = (),
) -> Outcome:
    """A job of a sweep: a run that fails or ends early gives its outcome rather than raising (the sweep
    goes on; a failure's traceback is kept in the job's ``error.txt``). Only what is not an ``Exception``
    (Ctrl-C, a stop signal) propagates, once its run is closed as KILLED."""
    try:
        return fit_recorded(cfg, built, output_dir, job, record, extra)
    except Exception as err:  # noqa: BLE001 - recorded in the outcome, the sweep goes on
        outcome = Outcome.of_error(
            err, metric=built.metric, mode=built.mode, run_id=record.handle if record else ""
        )
        details = traceback.format_exc()
    prefix = "" if job is None else f"[job {job}] "
    if outcome.state is not State.FAILED:
        log.info("%s%s", prefix, outcome.reason)
    elif job is not None:
        (output_dir / "error.txt").write_text(redact_text(details))
        log.error("%sFAILED: %s", prefix, outcome.reason)
    return outcome
