"""One configuration scored over several seeds (``repeats``/``seeds``) or folds (``cv``): in MLflow one
configuration run with a run per seed nested under it, carrying the mean, std and 95% interval of the
objective and of every final metric; to the sweeper, one ``Outcome`` whose value is the mean and whose
``samples`` are each seed's value (for the verdicts). The seeds train in lockstep (``lockstep``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from sweeps.outcome import Outcome, State, is_test_metric
from sweeps.tracking import stats
from sweeps.training import folds, seeds
from sweeps.training.build import build, build_datamodule
from sweeps.training.fit import prepare, quiet_lightning
from sweeps.training.lockstep import Lockstep, Turns, random_state

log = logging.getLogger("sweeplab")
WORST_FIRST = (State.FAILED, State.KILLED, State.STOPPED, State.PRUNED, State.FINISHED)


def _report(trial: Any) -> Any:
    """The trial's per-epoch report of the mean over seeds: True when the pruner stops the trial."""
    if trial is None:
        return None

    def report(epoch: int, mean: float) -> bool:
        trial.trial.report(mean, epoch)
        return bool(trial.trial.should_prune())

    return report


def prepare_members(
    cfg: DictConfig, members: list[seeds.Member], tracker: Any = None
) -> tuple[list[tuple[DictConfig, Any]], list[dict[str, Any]]]:
    """Each member's config and built run, seeded and built one after another as a single run would be,
    and the random state each one left (``lockstep`` restores it at each of its turns)."""
    built, states = [], []
    for member in members:
        member_cfg = seeds.config_of(cfg, member)
        built.append((member_cfg, _prepare(member_cfg, member, tracker)))
        states.append(random_state())
    return built, states


def _prepare(cfg: DictConfig, member: seeds.Member, tracker: Any) -> Any:
    """Seed and build one member, as ``fit.prepare`` does; the order of its training batches follows its
    seed (the split does not, unless ``repeats_vary_split``); a fold trains and validates on its part."""
    if not member.fold:
        built = prepare(cfg, tracker)
    else:
        quiet_lightning()
        pl.seed_everything(member.seed, workers=True, verbose=False)
        data = build_datamodule(cfg)
        split_seed = int(OmegaConf.select(cfg, "data.seed", default=0))
        folds.use_fold(data.module, member.fold, member.folds, split_seed)
        built = build(cfg, data, tracker)
    if hasattr(built.datamodule, "shuffle_seed"):
        built.datamodule.shuffle_seed = member.seed
    return built


def train(
    members: list[seeds.Member],
    states: list[dict[str, Any]],
    metric: str,
    trial: Any,
    train_member: Callable[[int, list[Any], Callable[[], None]], Outcome],
) -> list[Outcome]:
    """Every member's fit (``train_member(i, callbacks, wait_turn)``, which waits for its first turn and
    then trains), each in its own thread, in turns; the trial hears the mean over members after each
    epoch. Ctrl-C here stops them all, then propagates."""
    lockstep = Lockstep(states, metric, _report(trial))
    outcomes: list[Outcome] = [Outcome(State.KILLED, reason="did not start")] * len(members)
    threads_n = torch.get_num_threads()

    def one(i: int) -> None:
        torch.set_num_threads(threads_n)  # a thread starts with the library's default
        try:
            outcomes[i] = train_member(i, [Turns(lockstep, i)], lambda: lockstep.wait_turn(i))
        except BaseException as err:  # noqa: BLE001 - Abandoned, or Ctrl-C: its run was closed KILLED
            outcomes[i] = Outcome.of_error(err)
        finally:
            if outcomes[i].state is State.FAILED:
                lockstep.stop(f"{members[i].label} failed")
            lockstep.leave(i)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(members))]
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
    out.update(
        {k: v for k, v in outcome.metrics.items() if is_test_metric(k) or k.startswith(("val_", "val/"))}
    )
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
    record.session.log(record.handle, metrics=metrics, step=outcome.epochs, tags=tags)
    record.session.end_run(record.handle, outcome.mlflow_status)


def describe(outcome: Outcome) -> str:
    """One line: the mean +- the 95% interval's half-width over N, or how the configuration ended."""
    if not outcome.complete:
        return f"{outcome.state.value.lower()}: {outcome.reason}"
    spread = stats.spread(list(outcome.samples.values()))
    return f"{outcome.metric} = {spread.mean:.4f} ± {spread.half_width:.4f} (95% CI, {spread.n} runs)"
