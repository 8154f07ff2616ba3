"""What a search leaves besides the leaderboard: the best trial of the whole study (``best.yaml``, the
console, Optuna's pictures on the parent run), and the rows of trials that other workers ran."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeps.outcome import Outcome, of_trial
from sweeps.search.space import Space, format_value
from sweeps.search.study import StudyRef
from sweeps.tracking.leaderboard import Row, short
from sweeps.tracking.session import Session

log = logging.getLogger("sweeplab")


def best(ref: StudyRef, space: Space, metric: str, sweep_dir: Path, session: Session | None) -> None:
    """Print and keep the best trial of the whole study, and put Optuna's pictures on the parent run."""
    if not ref.trials((TrialState.COMPLETE,)):
        log.warning("search: no trial of study %s has completed yet", ref.name)
        return
    trial = ref.study.best_trial
    summary = {
        "study": ref.name,
        "metric": metric,
        "direction": ref.study.direction.name.lower(),
        "value": trial.value,
        "trial": trial.number,
        "params": {k: trial.params[k] for k in sorted(trial.params)},
        "overrides": space.overrides(trial.params),
    }
    (sweep_dir / "best.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(summary)))
    params = " ".join(f"{k}={short(format_value(v))}" for k, v in trial.params.items())  # whole in best.yaml
    print(f"best of study {ref.name}: {metric}={trial.value:.4g} (trial {trial.number}) with {params}")
    print(f"written to {sweep_dir / 'best.yaml'}", flush=True)
    if session:
        session.artifact(session.sweep_run, str(sweep_dir / "best.yaml"))
        session.optuna_plots(session.sweep_run, ref.url, ref.name, list(space.distributions))


def study_rows(ref: StudyRef, worker_rows: list[Row], runs: dict[str, str]) -> list[Row]:
    """Leaderboard rows of every ended trial of the study: this worker's rows, and the others' from Optuna,
    with their run ids from ``runs`` (trial number -> run id: ``Session.trial_runs``)."""
    mine = {row.job: row for row in worker_rows}
    rows = []
    for t in ref.study.get_trials(deepcopy=False):
        state = of_trial(t)
        if t.number in mine:
            rows.append(mine[t.number])
        elif state is not None:
            value = t.value if t.state == TrialState.COMPLETE and t.value is not None else math.nan
            outcome = Outcome(
                state,
                value,
                epochs=len(t.intermediate_values),
                seconds=t.duration.total_seconds() if t.duration else 0.0,
                reason=str(t.user_attrs.get("sweeplab.reason", "")),
                samples=dict(t.user_attrs.get("sweeplab.samples", {})),
                run_id=runs.get(str(t.number), ""),
            )
            shown = {k: format_value(v) for k, v in t.params.items()}
            rows.append(Row.of(t.number, shown, outcome))
    return rows
