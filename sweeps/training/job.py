"""``run_job(cfg, ctx) -> Outcome``: the one function that trains one job, whoever runs it.

A single run, a job of a grid or a search in the sweeper's process, a trial worker's job, each DDP rank, a
submitit (Slurm) job and each seed or fold of ``repeats``/``cv`` all come here; they differ only in how they
deliver ``(cfg, ctx)`` (``training.context``) and where the ``Outcome`` goes.

The sequence: check -> build -> begin the MLflow run -> train -> record -> outcome. The policy, in one place
(``_ended``): any exception becomes an ``Outcome`` and the run is closed with it (bad input and crashes
FAILED, the pruner's stop PRUNED, the deadline STOPPED, a scheduler's signal or Ctrl-C KILLED). What is not
an ``Exception`` (Ctrl-C, a stop signal) is raised again once the run is closed: the process must stop.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeps.outcome import Outcome, State
from sweeps.support.errors import TrackingError
from sweeps.support.secrets import redact_text
from sweeps.tracking.run_record import RunRecord
from sweeps.training.checks import check_config
from sweeps.training.context import JobContext
from sweeps.training.seeds import Member

log = logging.getLogger("sweeplab")
ERROR_FILE = "error.txt"


def run_job(cfg: DictConfig, ctx: JobContext) -> Outcome:
    """Train ``cfg`` and close its MLflow run; its outcome, whatever happens (see the module's docstring).
    ``run_id`` of the outcome is the tracking session's handle of the run (``resolved`` makes it MLflow's
    run id, waiting for the run's writes: a caller with a tracking process of its own needs that; the sweeper
    and its trial workers share one, which knows every handle)."""
    from sweeps.training import seeds

    record = None
    objective: dict[str, str] = {}
    try:
        check_config(cfg)  # cheap checks first: bad values fail before torch is even imported
        from sweeps.training.reconcile import reconcile

        cfg, choices = reconcile(cfg, ctx.overrides, ctx.choices)  # a user's module: what trains
        ctx = replace(ctx, choices=choices)
        members = seeds.check(cfg)
        if members:  # one configuration over several seeds or folds (``training.repeats``)
            return _run_configuration(cfg, ctx, members)
        from sweeps.training.fit import prepare  # torch and Lightning load here

        built = prepare(cfg, ctx.tracker)
        objective = {"metric": built.metric, "mode": built.mode}
        record = _begin(cfg, ctx)
        outcome = _train_and_record(cfg, built, ctx, record)
    except BaseException as err:
        return _ended(err, ctx, record, **objective)
    return _with_handle(outcome, record)


class JobFailed(RuntimeError):
    """``train``: the job failed (the message is its reason)."""


def train(cfg: DictConfig, output_dir: Path | None = None) -> Outcome:
    """``run_job`` without tracking or a trial, for scripts, benchmarks and tests: the same path a sweep's
    job takes. A job that failed raises ``JobFailed``; a pruned or stopped one cannot happen here."""
    outcome = run_job(cfg, JobContext(output_dir))
    if outcome.state is State.FAILED:
        raise JobFailed(outcome.reason)
    return outcome


def _begin(
    cfg: DictConfig, ctx: JobContext, tags: dict[str, str] | None = None, overrides: Any = None
) -> RunRecord | None:
    """The job's MLflow run, before it trains (None without tracking, and in DDP ranks but the first)."""
    if ctx.tracker is None or not ctx.first_rank:
        return None
    return RunRecord(
        ctx.tracker,
        cfg,
        ctx.name,
        ctx.job,
        list(ctx.overrides if overrides is None else overrides),
        ctx.choices,
        ctx.parent_run,
        {**ctx.run_tags(), **(tags or {})},
    )


def _ended(
    err: BaseException,
    ctx: JobContext,
    record: RunRecord | None,
    metric: str = "objective",
    mode: str = "max",
) -> Outcome:
    """The one exception policy: the error as an outcome, the run closed with it, a line in the log (and a
    failure's traceback in the job's ``error.txt``); what is not an ``Exception`` is raised again."""
    outcome = Outcome.of_error(err, metric=metric, mode=mode)
    if record is not None:
        try:
            record.end(outcome)
        except TrackingError:  # the tracking process is gone (maybe the error itself): the next command
            pass  # reaps the run it left RUNNING
    if outcome.state is State.FAILED:
        if ctx.output_dir is not None and ctx.output_dir.is_dir():
            (ctx.output_dir / ERROR_FILE).write_text(redact_text(traceback.format_exc()))
        if ctx.job is not None:
            log.error("%sFAILED: %s", ctx.prefix, outcome.reason)
    elif ctx.job is not None and isinstance(err, Exception):  # pruned, stopped: a search says it once
        log.info("%s%s", ctx.prefix, outcome.reason, extra={"detail": "member" if ctx.label else "job"})
    if not isinstance(err, Exception):
        raise err
    return _with_handle(outcome, record)


def _with_handle(outcome: Outcome, record: RunRecord | None) -> Outcome:
    """The outcome with its run's handle."""
    return outcome.replace(run_id=record.handle) if record is not None else outcome


def resolved(outcome: Outcome, tracker: Any) -> Outcome:
    """The outcome with its MLflow run id in place of the session's handle (once the run is written)."""
    if tracker is None or not outcome.run_id:
        return outcome
    return outcome.replace(run_id=tracker.run_ids([outcome.run_id])[outcome.run_id])


def _callbacks(ctx: JobContext, built: Any, record: RunRecord | None) -> list[Any]:
    """Per-epoch tracking, the caller's callbacks, then the trial's pruning and the sweep's deadline."""
    from lightning_modules.callbacks import EpochEnd
    from sweeps.training.callbacks import OptunaPruning, StopAtDeadline, TrainedWith

    callbacks: list[Any] = []
    if record:
        callbacks += [
            EpochEnd(record.epoch),
            TrainedWith(lambda p: record.session.log(record.handle, params=p)),
        ]
    callbacks.extend(ctx.callbacks)
    if ctx.trial is not None or ctx.follows_trial:
        callbacks.append(OptunaPruning(ctx.trial.trial if ctx.trial else None, built.metric))
    if ctx.deadline:
        callbacks.append(StopAtDeadline(ctx.deadline))
    return callbacks


def parameter_counts(module: Any) -> dict[str, str]:
    """How many parameters the network has, and how many of them train (frozen blocks, adapters)."""
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"params_total": str(total), "params_trainable": str(trainable)}


def _train_and_record(cfg: DictConfig, built: Any, ctx: JobContext, record: RunRecord | None) -> Outcome:
    """Fit (or run the lr range test), then record the result on the run and close it FINISHED."""
    from sweeps.training import compiled, lora, lr_find
    from sweeps.training.datasets import describe
    from sweeps.training.fit import fit

    output_dir = ctx.output_dir
    compiled.use_cache(cfg, output_dir, in_sweep=ctx.job is not None)
    if record:
        if built.lineage:  # stage=finetune, model=hf: where its weights came from
            record.session.log(record.handle, **built.lineage)
        record.session.log(record.handle, params=parameter_counts(built.module))
        described = describe(built.datamodule, OmegaConf.to_yaml(cfg.data, resolve=True))
        if described:
            record.datasets(described)
    if lr_find.is_lr_find(cfg):
        outcome = lr_find.run(cfg, built, output_dir, record, ctx.prefix)
    else:
        outcome = fit(cfg, built, output_dir, ctx.prefix, _callbacks(ctx, built, record))
    if record:
        if record.session.log_model and outcome.state is State.FINISHED:
            from sweeps.training.export import export

            record.model(export(built, output_dir, merge=bool(lora.settings(cfg).get("merge", False))))
        if outcome.state is State.FINISHED:  # finetune.lora: the adapter's safetensors, as artifacts
            lora.log_adapter(cfg, built, output_dir, record)
        record.finish(outcome)
    if ctx.job is not None and ctx.first_rank:
        log.info(
            "%sdone: %s = %.4f (%d epochs, %.1fs)",
            ctx.prefix,
            outcome.metric,
            outcome.value,
            outcome.epochs,
            outcome.seconds,
            # a sweep leaves out a seed's or fold's line unless verbose (its configuration's line follows), a
            # search every job's (its "trial N finished" line says the same)
            extra={"detail": "member" if ctx.label else "job"},
        )
    return outcome


def _run_configuration(cfg: DictConfig, ctx: JobContext, members: list[Member]) -> Outcome:
    """``repeats``/``seeds``/``cv``: build every member, begin the configuration's run and a run per member
    nested under it, train the members in lockstep (each through ``_train_member``, under the same policy),
    then close the configuration's run with the mean and spread."""
    from sweeps.training import repeats, seeds

    record = None
    try:
        built, states = repeats.prepare_members(cfg, members, ctx.tracker)
        tags = {"sweeplab.kind": "configuration", "sweeplab.repeats": str(len(members))}
        record = _begin(cfg, ctx, tags)
        runs = []
        for member, (member_cfg, _) in zip(members, built, strict=True):
            kind = {"sweeplab.kind": "fold" if member.fold else "seed", "sweeplab.member": member.label}
            parent = record.handle if record else None
            member_ctx = replace(ctx, name=f"{ctx.name} {member.label}", parent_run=parent)
            shown = seeds.overrides_of(list(ctx.overrides), cfg, member)
            runs.append(_begin(member_cfg, member_ctx, kind, shown) if record else None)
    except BaseException as err:
        return _ended(err, ctx, record)
    metric, mode = built[0][1].metric, built[0][1].mode

    def train_member(i: int, callbacks: list[Any], wait_turn: Callable[[], None]) -> Outcome:
        member_cfg, member_built = built[i]
        folder = None
        if ctx.output_dir is not None:
            folder = ctx.output_dir / members[i].label.split("/")[0].replace("=", "_")
            folder.mkdir(parents=True, exist_ok=True)
        member_ctx = replace(
            ctx, output_dir=folder, trial=None, callbacks=(*ctx.callbacks, *callbacks), label=members[i].label
        )
        try:
            wait_turn()
            return _train_and_record(member_cfg, member_built, member_ctx, runs[i])
        except BaseException as err:
            return _ended(err, member_ctx, runs[i], metric, mode)

    try:
        outcomes = repeats.train(members, states, metric, ctx.trial, train_member)
    except BaseException as err:
        return _ended(err, ctx, record, metric, mode)
    outcome = repeats.summarise(members, outcomes, metric, mode)
    if record:
        repeats.finish(record, outcome, outcomes)
    if ctx.job is not None:
        log.info("%s%s", ctx.prefix, repeats.describe(outcome), extra={"detail": "job"})
    return _with_handle(outcome, record)
