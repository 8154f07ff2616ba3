"""The morning report of a nightly sweep: what the study holds after the night, what changed since the
previous night, and pictures, as Markdown (``report.md``) with its data (``summary.json``) in the night's
folder, and on the sweep's MLflow parent run.

"Since the previous night" compares with the last summary in the plan's ``history.jsonl``, one line per night.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from sweeps.outcome import State, of_trial
from sweeps.search.coordination import recover_stale
from sweeps.search.locks import lock
from sweeps.search.space import format_value
from sweeps.search.study import FINISHED, StudyRef, load
from sweeps.support.errors import ConfigError
from sweeps.support.secrets import redact_text
from sweeps.tracking import stats
from sweeps.tracking.plots import heatmap

STATES = ("complete", "pruned", "failed", "stopped")


NAMES = {State.FINISHED: "complete", State.PRUNED: "pruned", State.FAILED: "failed", State.STOPPED: "stopped"}


def state_of(trial: FrozenTrial) -> str:
    """The report's word for how a trial ended (``running``, ``waiting`` while it has not)."""
    state = of_trial(trial)
    return NAMES[state] if state in NAMES else trial.state.name.lower()


def summarize(
    study: optuna.Study | None, night: dict[str, Any], n_trials: int, metric: str, previous: dict | None
) -> dict[str, Any]:
    """Everything the report says, as plain data (also what the webhook receives)."""
    summary: dict[str, Any] = {**night, "metric": metric, "n_trials": n_trials, "best": None}
    trials = study.get_trials(deepcopy=False) if study else []
    started = dt.datetime.fromisoformat(night["started"]).replace(tzinfo=None)  # Optuna's times are naive
    tonight = [t for t in trials if t.datetime_start and t.datetime_start >= started]
    summary["tonight"] = {s: sum(state_of(t) == s for t in tonight) for s in STATES}
    summary["tonight"]["started"] = len(tonight)
    last = max((t.datetime_start for t in tonight if t.datetime_start), default=None)
    summary["last_trial_start"] = last.astimezone().isoformat(timespec="seconds") if last else None
    summary["study_totals"] = {s: sum(state_of(t) == s for t in trials) for s in (*STATES, "running")}
    summary["study_totals"]["finished"] = sum(t.state in FINISHED for t in trials)
    reasons = Counter(
        redact_text(t.user_attrs.get("sweeplab.reason", "its process died before the trial ended"))
        for t in tonight
        if state_of(t) == "failed"
    )
    summary["failure_reasons"] = dict(reasons.most_common())
    if study and any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        summary["direction"] = study.direction.name.lower()
        summary["best"] = {
            "value": best.value,
            "trial": best.number,
            "params": dict(best.params),
            "overrides": [f"{k}={format_value(v)}" for k, v in best.params.items()],
            "ci": spread_text(best.user_attrs.get("sweeplab.samples", {})),
        }
    summary["changes"] = changes(summary, previous)
    return summary


def spread_text(samples: dict[str, float]) -> str:
    """`` ± half-width (95% CI, N seeds)`` of a trial trained on several seeds (``repeats``), else ""."""
    spread = stats.spread(list(samples.values()))
    return f" ± {spread.half_width:.4f} (95% CI, {spread.n} seeds)" if spread.n > 1 else ""


def changes(now: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """New best or not, the best's change, trials added: against the previous night's summary."""
    if not previous:
        return {"previous": None}
    same = previous.get("study") == now["study"]
    before = previous.get("best") if same else None
    out: dict[str, Any] = {
        "previous": previous.get("night"),
        "previous_study": previous.get("study"),
        "same_study": same,
        "trials_added": now["study_totals"]["finished"]
        - (previous.get("study_totals", {}).get("finished", 0) if same else 0),
        "previous_best": before["value"] if before else None,
    }
    best = now.get("best")
    if best and before:
        sign = 1 if now.get("direction", "maximize") == "maximize" else -1
        out["best_delta"] = best["value"] - before["value"]
        out["new_best"] = sign * out["best_delta"] > 0
    else:
        out["best_delta"] = None
        out["new_best"] = bool(best)
    return out


def previous_summary(history: Path) -> dict[str, Any] | None:
    if not history.exists():
        return None
    lines = [line for line in history.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def pictures(study: optuna.Study | None, folder: Path, metric: str) -> dict[str, str]:
    """Optimisation history, parameter importances, and loss x optimizer at the best lr where the study
    searches both; each one Optuna (or the data) cannot draw yet is left out with one line."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    if study is None or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*too small to compute importances")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    drawn: dict[str, str] = {}
    for name, title, draw in (
        ("optimization_history.png", "optimisation history", plots.plot_optimization_history),
        ("param_importances.png", "parameter importances", plots.plot_param_importances),
    ):
        try:
            axes: Any = draw(study)
        except Exception as err:  # noqa: BLE001 - e.g. importances need two completed trials
            print(f"nightly: no {title}: {redact_text(str(err)).splitlines()[0][:200]}", flush=True)
            continue
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
        drawn[name] = title
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    if all({"loss", "optimizer"} <= set(t.params) for t in trials):
        rows = [
            {
                "objective": t.value if t.state == TrialState.COMPLETE else math.nan,
                "overrides": {
                    "loss": str(t.params["loss"]),
                    "optimizer": str(t.params["optimizer"]),
                    "lr": f"{t.params['lr']:.2g}" if "lr" in t.params else "",
                },
            }
            for t in trials
        ]
        mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
        heatmap(rows, metric, mode, folder / "heatmap.png")
        drawn["heatmap.png"] = "loss x optimizer (best lr)"
    return drawn


def markdown(summary: dict[str, Any], images: dict[str, str] | None) -> str:
    """The report; without ``images`` (the MLflow run's note) it points at the artifacts instead."""
    s, metric = summary, summary["metric"]
    fixed = [o for o in s["overrides"] if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    time = _clock
    lines = [
        f"# Nightly sweep `{s['plan']}`: {s['night']}",
        "",
        f"Study `{s['study']}` · started {time(s['started'])} · deadline {time(s['deadline'])} · "
        f"ended {time(s['ended'])} · exit code {s['exit_code']}"
        + (" (**the sweep broke**: see the log)" if s["exit_code"] else "")
        + (f" · stopped early at {time(s['stopped'])} (`sweeps.nightly stop`)" if s.get("stopped") else ""),
        "",
        "## Best",
        "",
    ]
    best = s["best"]
    pick = f"{s.get('group', 'plan')}={s['plan']}"  # in the group holding it (``schedule``: the old name)
    if best:
        lines += [
            f"**{metric} = {best['value']:.4f}**{best.get('ci', '')} "
            f"(trial {best['trial']}, {s.get('direction', '')})",
            "",
            "| parameter | value |",
            "|---|---|",
            *(f"| `{k}` | {_value(v)} |" for k, v in best["params"].items()),
            "",
            "Train it again: `"
            + shlex.join(["python", "-m", "sweeps.run", pick, *fixed, *best["overrides"]])
            + "`",
        ]
    else:
        lines.append("No trial has completed yet.")
    lines += ["", "## Since the previous night", "", *_since(s, metric)]
    lines += _trials(s)
    reasons = s["failure_reasons"]
    lines += [f"- {n} x `{r}`" for r, n in reasons.items()] or ["None."]
    lines += ["", "## Pictures", ""]
    if images is None:
        lines.append("In this run's artifacts, under `nightly/`.")
    else:
        lines += [f"![{title}]({name})" for name, title in images.items()] or ["None yet."]
    return "\n".join(lines) + "\n"


def _trials(s: dict[str, Any]) -> list[str]:
    """The report's table of trial states, tonight and in the whole study."""
    totals, tonight = s["study_totals"], s["tonight"]
    return [
        "",
        "## Trials",
        "",
        f"The study holds {totals['finished']} of {s['n_trials']} finished trials (completed or pruned).",
        "",
        "| state | tonight | study |",
        "|---|---|---|",
        *(
            f"| {label} | {tonight[k]} | {totals[k]} |"
            for k, label in (
                ("complete", "completed"),
                ("pruned", "pruned"),
                ("failed", "failed"),
                ("stopped", "stopped at the deadline (run again next night)"),
            )
        ),
        "",
        f"Trials started tonight: {tonight['started']}; the last at {_clock(s['last_trial_start'])} "
        f"(deadline {_clock(s['deadline'])}). Trials still running: {totals['running']}.",
        "",
        "### Failure reasons (tonight)",
        "",
    ]


def _since(s: dict[str, Any], metric: str) -> list[str]:
    """The report's lines on what changed since the previous night."""
    out: list[str] = []
    best = s["best"]
    c = s["changes"]
    if not c.get("previous"):
        out.append("First night of this plan (no previous report).")
    else:
        where = "the same study" if c["same_study"] else f"a new study (previous: `{c['previous_study']}`)"
        out.append(f"- compared with {c['previous']}, {where}")
        if best and c.get("best_delta") is not None:
            verdict = "**new best**" if c["new_best"] else "no new best"
            out.append(
                f"- {verdict}: {metric} {best['value']:.4f} ({c['best_delta']:+.4f} against "
                f"{c['previous_best']:.4f})"
            )
        elif best:
            out.append(f"- **new best**: {metric} {best['value']:.4f} (none before)")
        else:
            out.append("- no best yet")
        out.append(f"- trials added: {c['trials_added']}")
    return out


def _clock(iso: str | None) -> str:
    return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S") if iso else "-"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def close_orphans(ref: StudyRef) -> None:
    """Fail (and queue again) the trials that a killed sweep process left RUNNING on this host, as the next
    run of the study would, so that the report and the store show no open trial."""
    with lock(ref.url, f"study:{ref.name}"):
        recover_stale(ref, heartbeats=False)


def write(
    study_name: str,
    storage: str,
    night: dict[str, Any],
    n_trials: int,
    folder: Path,
    history: Path,
) -> tuple[Path, dict[str, Any], str]:
    """Load the study, write report.md, summary.json and the pictures, and add the night to the history."""
    study: optuna.Study | None = None
    try:
        ref = load(study_name, storage)
    except (KeyError, ConfigError):  # the sweep broke before it created the study, or cannot reach it
        pass
    else:
        close_orphans(ref)
        study = ref.study
    best_yaml = folder / "sweep" / "best.yaml"
    metric = str(OmegaConf.load(best_yaml).metric) if best_yaml.exists() else "objective"
    summary = summarize(study, night, n_trials, metric, previous_summary(history))
    images = pictures(study, folder, metric)
    text = markdown(summary, images)
    path = folder / "report.md"
    summary["report"] = str(path)
    summary["pictures"] = list(images)
    path.write_text(text)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with history.open("a") as f:
        f.write(json.dumps(summary) + "\n")
    return path, summary, markdown(summary, None)


def to_mlflow(tracking: Any, sweep_dir: Path, folder: Path, files: list[str], note: str) -> str | None:
    """Put the report on the sweep's parent run (found by its sweep folder): artifacts under ``nightly/``
    and the text as the run's description. Returns the run id."""
    from sweeps.tracking.store import Store  # MLflow: only once the report is written

    uri = str(tracking.uri)
    if uri.startswith("sqlite:///"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).expanduser().resolve()}"
    client = Store().connect(uri)
    experiment = client.get_experiment_by_name(str(tracking.experiment))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`sweeplab.sweep_dir` = '{sweep_dir}'",
        max_results=1,
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    for name in files:
        client.log_artifact(run_id, str(folder / name), "nightly")
    client.set_tag(run_id, "mlflow.note.content", note)
    client.set_tag(run_id, "sweeplab.nightly.report", str(folder / "report.md"))
    return run_id


def warn(message: str) -> None:
    print(f"nightly: {redact_text(message)}", file=sys.stderr, flush=True)
