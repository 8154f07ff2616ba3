"""One configuration scored over several seeds (``repeats``/``seeds``) or folds (``cv``): in MLflow one
configuration run with a run per seed nested under it, carrying the mean, std and 95% interval of the
objective and of every final metric; to the sweeper, one ``Outcome`` whose value is the mean and whose
``samples`` are each seed's value (for the verdicts). The seeds train in lockstep (``lockstep``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from sweeps.outcome import Outcome, State
from sweeps.support.context import current_trial, deadline, set_trial
from sweeps.tracking import stats
from sweeps.training import folds, seeds
from sweeps.training.build import build, build_datamodule
from sweeps.training.callbacks import StopAtDeadline
from sweeps.training.fit import prepare, quiet_lightning
from sweeps.training.lockstep import Lockstep, Turns, random_state
from sweeps.training.record import run_trial

log = logging.getLogger("sweeplab")
WORST_FIRST = (State.FAILED, State.KILLED, State.STOPPED, State.PRUNED, State.FINISHED)


def _prefix(job: int | None) -> str:
    return "" if job is None else f"[job {job}] "


def _report(trial: Any) -> Any:
    """The trial's per-epoch report of the mean over seeds: True when the pruner stops the trial."""
    if trial is None:
        return None

    def report(epoch: int, mean: float) -> bool:
        trial.trial.report(mean, epoch)
        return bool(trial.trial.should_prune())

    return report


def run_configuration(
    cfg: DictConfig,
    output_dir: Path,
    job: int | None,
    name: str,
    overrides: list[str],
    choices: dict[str, Any],
    session: Any,
) -> Outcome:
    """Train every seed (or fold) of ``cfg``; its outcome (run_id: the configuration run's id). A failure
    is an outcome, as for any job of a sweep; Ctrl-C propagates once every run is closed."""
    members = seeds.check(cfg)
    trial = current_trial()
    record = None
    try:
        if session:
            tags = {"sweeplab.kind": "configuration", "sweeplab.repeats": str(len(members))}
            record = session.begin_run(cfg, name, job, overrides, choices, tags=tags)
        built, states = [], []
        for member in members:  # seeded and built one after another, as a single run would be
            member_cfg = seeds.config_of(cfg, member)
            built.append((member_cfg, _prepare(member_cfg, member)))
            states.append(random_state())
    except Exception as err:  # noqa: BLE001 - bad input of one job: the sweep goes on
        outcome = Outcome.of_error(err)
        if record:
            record.end(outcome)
        log.error("%sFAILED: %s", _prefix(job), outcome.reason)
        return outcome.replace(run_id=record.run_id if record else "")
    metric = built[0][1].metric
    lockstep = Lockstep(states, metric, _report(trial))
    runs = []
    for member, (member_cfg, _) in zip(members, built, strict=True):
        run = None
        if session and record:
            tags = {"sweeplab.kind": "fold" if member.fold else "seed", "sweeplab.member": member.label}
            shown = seeds.overrides_of(overrides, cfg, member)
            run = session.begin_run(
                member_cfg, f"{name} {member.label}", job, shown, choices, record.handle, tags
            )
        runs.append(run)
    try:
        outcomes = _train(members, built, runs, lockstep, output_dir, job, trial)
    except BaseException as err:
        if record:
            record.end(Outcome.of_error(err))
        raise
    outcome = summarise(members, outcomes, metric, built[0][1].mode)
    if record:
        finish(record, outcome, outcomes)
        outcome = outcome.replace(run_id=record.run_id)
    if job is not None:
        log.info("%s%s", _prefix(job), describe(outcome))
    return outcome


def _prepare(cfg: DictConfig, member: seeds.Member) -> Any:
    """Seed and build one member, as ``fit.prepare`` does; the order of its training batches follows its
    seed (the split does not, unless ``repeats_vary_split``); a fold trains and validates on its part."""
    if not member.fold:
        built = prepare(cfg)
    else:
        quiet_lightning()
        pl.seed_everything(member.seed, workers=True, verbose=False)
        data = build_datamodule(cfg)
        split_seed = int(OmegaConf.select(cfg, "data.seed", default=0))
        folds.use_fold(data.module, member.fold, member.folds, split_seed)
        built = build(cfg, data)
    if hasattr(built.datamodule, "shuffle_seed"):
        built.datamodule.shuffle_seed = member.seed
    return built


def _train(
    members: list[seeds.Member],
    built: list[tuple[DictConfig, Any]],
    runs: list[Any],
    lockstep: Lockstep,
    output_dir: Path,
    job: int | None,
    trial: Any,
) -> list[Outcome]:
    """Every member's fit, in its own thread, in turns; Ctrl-C here stops them all, then propagates."""
    outcomes: list[Outcome] = [Outcome(State.KILLED, reason="did not start")] * len(members)
    threads_n = torch.get_num_threads()
    at = deadline() if trial else None

    def one(i: int) -> None:
        torch.set_num_threads(threads_n)  # a thread starts with the library's default
        member_cfg, member_built = built[i]
        folder = output_dir / members[i].label.split("/")[0].replace("=", "_")
        folder.mkdir(parents=True, exist_ok=True)
        extra: list[Any] = [Turns(lockstep, i), *([StopAtDeadline(at)] if at else [])]
        started = False
        try:
            lockstep.wait_turn(i)
            started = True
            outcomes[i] = run_trial(member_cfg, member_built, folder, job, runs[i], extra)
        except BaseException as err:  # noqa: BLE001 - Abandoned, or Ctrl-C: the run is closed KILLED
            outcomes[i] = Outcome.of_error(err)
            if runs[i] and not started:  # once started, ``run_trial`` closed it
                runs[i].end(outcomes[i])
        finally:
            if outcomes[i].state is State.FAILED:
                lockstep.stop(f"{members[i].label} failed")
            lockstep.leave(i)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(members))]
    set_trial(None)  # the trial hears the means (``lockstep``), not each seed
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        lockstep.stop("interrupted")
        for thread in threads:
            thread.join()
        raise
    finally:
        set_trial(trial)
    return outcomes


def summarise(members: list[seeds.Member], outcomes: list[Outcome], metric: str, mode: str) -> Outcome:
    """The configuration's outcome: the mean over its members if all finished, else the worst state."""
    state = next(s for s in WORST_FIRST if any(o.state is s for o in outcomes))
    samples = {m.key: o.value for m, o in zip(members, outcomes, strict=True) if o.complete}
    common = dict(metric=metric, mode=mode, samples=samples)
    if state is not State.FINISHED:
        first = next((m, o) for m, o in zip(members, outcomes, strict=True) if o.state is state and o.reason)
        reason = first[1].reason if state is State.PRUNED else f"{first[0].label}: {first[1].reason}"
        epochs = max(o.epochs for o in outcomes)
        return Outcome(state, reason=reason, epochs=epochs, **common)  # type: ignore[arg-type]
    keys = [k for k in outcomes[0].metrics if all(k in o.metrics for o in outcomes)]
    return Outcome(
        State.FINISHED,
        stats.spread(list(samples.values())).mean,
        epochs=max(o.epochs for o in outcomes),
        seconds=sum(o.seconds for o in outcomes),
        metrics={k: stats.spread([o.metrics[k] for o in outcomes]).mean for k in keys},
        **common,  # type: ignore[arg-type]
    )


def final_metrics(outcome: Outcome) -> dict[str, float]:
    """What a seed run records at its end (as ``RunRecord.finish``): the figures the configuration spreads."""
    out = {f"best_{outcome.metric}": outcome.value, "epochs": float(outcome.epochs)}
    out["train_seconds"] = outcome.seconds
    if outcome.metric in outcome.metrics:
        out[f"final_{outcome.metric}"] = outcome.metrics[outcome.metric]
    out.update({k: v for k, v in outcome.metrics.items() if k.startswith(("test_", "val_"))})
    return out


def finish(record: Any, outcome: Outcome, outcomes: list[Outcome]) -> None:
    """Close the configuration run: each final metric's mean (under its own name), std and 95% interval."""
    if outcome.state is not State.FINISHED:
        record.end(outcome)
        return
    finals = [final_metrics(o) for o in outcomes]
    metrics: dict[str, float] = {"n_seeds": float(len(finals))}
    for key in finals[0]:
        spread = stats.spread([f[key] for f in finals if key in f])
        metrics.update(
            {
                key: spread.mean,
                f"{key}_std": spread.std,
                f"{key}_ci_low": spread.low,
                f"{key}_ci_high": spread.high,
            }
        )
    tags = {"sweeplab.state": State.FINISHED.value, "sweeplab.objective": outcome.metric}
    record.session.send("log", run=record.handle, metrics=metrics, step=outcome.epochs, tags=tags)
    record.session.send("end_run", run=record.handle, status=outcome.mlflow_status)


def describe(outcome: Outcome) -> str:
    """One line: the mean +- the 95% interval's half-width over N, or how the configuration ended."""
    if not outcome.complete:
        return f"{outcome.state.value.lower()}: {outcome.reason}"
    spread = stats.spread(list(outcome.samples.values()))
    return f"{outcome.metric} = {spread.mean:.4f} ± {spread.half_width:.4f} (95% CI, {spread.n} runs)"
