"""The end of a sweep: the leaderboard on the console and in the sweep folder, and the summary on the
sweep's MLflow parent run."""

from __future__ import annotations

import logging
from pathlib import Path

from sweeps.outcome import State
from sweeps.support.errors import TrackingError
from sweeps.tracking import leaderboard
from sweeps.tracking.session import Session

log = logging.getLogger("sweeplab")


def report(
    rows: list[leaderboard.Row],
    metric: str,
    mode: str,
    sweep_dir: Path,
    session: Session | None,
    stopped: str = "",
) -> None:
    """``stopped``: why a search started no further trial, under the table and in ``leaderboard.md``."""
    ranked = leaderboard.rank(rows, mode)
    said_stop = f"stopped: {stopped}\n" if stopped else ""
    print(f"\n{leaderboard.table(ranked, metric, mode)}\n{said_stop}", flush=True)
    said = leaderboard.verdicts(ranked, metric, mode)  # repeats: the best against each of the next ones
    if said:
        print("\n".join(["verdicts:", *(f"  {v}" for v in said)]) + "\n", flush=True)
    leaderboard.write_csv(ranked, metric, sweep_dir / "leaderboard.csv", mode)
    markdown = leaderboard.markdown(ranked, metric, mode)
    (sweep_dir / "leaderboard.md").write_text(f"{markdown}\n{said_stop}" if stopped else markdown)
    failed = sum(r.state == State.FAILED.value for r in rows)
    if failed:
        log.warning("%d of %d runs failed; errors are in each job's error.txt", failed, len(rows))
    if not (session and session.parent):
        return
    summary = leaderboard.summary(ranked, metric)
    parent = session.parent
    session.log(parent, metrics=summary["metrics"], tags=summary["tags"])
    for name in ("leaderboard.csv", "leaderboard.md"):
        session.artifact(parent, str(sweep_dir / name))
    if said:
        session.text(parent, "\n".join(said) + "\n", "verdicts.txt")
        session.log(parent, tags={"sweeplab.verdict": said[0][:5000]})
    if summary["best_overrides"]:
        session.text(parent, summary["best_overrides"], "best_config.txt")
    best_run = summary["tags"].get("sweeplab.best_run_id")
    if session.register_best and best_run:
        register_best(session, best_run, metric, summary)
    if {"loss", "optimizer"} <= set(ranked[0].overrides if ranked else {}):
        session.heatmap(parent, [r.__dict__ for r in ranked], metric, mode)


def register_best(session: Session, run_id: str, metric: str, summary: dict) -> None:
    """``tracking.register_best=NAME``: the best run's model as a new version of NAME, tagged with the
    sweep, its objective and the best configuration."""
    tags = {
        "sweeplab.sweep_id": str(session.sweep_id),
        "sweeplab.objective": metric,
        f"sweeplab.best_{metric}": f"{summary['metrics'][f'best_{metric}']:.6g}",
        "sweeplab.config": summary["tags"].get("sweeplab.best_config", ""),
        "sweeplab.run_id": run_id,
    }
    try:
        version = session.register(run_id, session.register_best, tags)
    except TrackingError as err:  # the sweep's results stand; say why its model is not registered
        log.error("tracking.register_best=%s: not registered: %s", session.register_best, err)
        return
    log.info("registered model %s version %s (run %s)", session.register_best, version, run_id)
