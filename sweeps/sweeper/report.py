"""The end of a sweep: the leaderboard on the console and in the sweep folder, and the summary on the
sweep's MLflow parent run."""

from __future__ import annotations

import logging
from pathlib import Path

from sweeps.outcome import State
from sweeps.tracking import leaderboard
from sweeps.tracking.session import Session

log = logging.getLogger("sweeplab")


def report(
    rows: list[leaderboard.Row], metric: str, mode: str, sweep_dir: Path, session: Session | None
) -> None:
    ranked = leaderboard.rank(rows, mode)
    print(f"\n{leaderboard.table(ranked, metric, mode)}\n", flush=True)
    said = leaderboard.verdicts(ranked, metric, mode)  # repeats: the best against each of the next ones
    if said:
        print("\n".join(["verdicts:", *(f"  {v}" for v in said)]) + "\n", flush=True)
    leaderboard.write_csv(ranked, metric, sweep_dir / "leaderboard.csv", mode)
    (sweep_dir / "leaderboard.md").write_text(leaderboard.markdown(ranked, metric, mode))
    failed = sum(r.state == State.FAILED.value for r in rows)
    if failed:
        log.warning("%d of %d runs failed; errors are in each job's error.txt", failed, len(rows))
    if not (session and session.parent):
        return
    summary = leaderboard.summary(ranked, metric)
    parent = session.parent
    session.send("log", run=parent, metrics=summary["metrics"], tags=summary["tags"])
    for name in ("leaderboard.csv", "leaderboard.md"):
        session.send("artifact", run=parent, path=str(sweep_dir / name))
    if said:
        session.send("text", run=parent, text="\n".join(said) + "\n", name="verdicts.txt")
        session.send("log", run=parent, tags={"sweeplab.verdict": said[0][:5000]})
    if summary["best_overrides"]:
        session.send("text", run=parent, text=summary["best_overrides"], name="best_config.txt")
    if {"loss", "optimizer"} <= set(ranked[0].overrides if ranked else {}):
        session.send("heatmap", run=parent, rows=[r.__dict__ for r in ranked], metric=metric, mode=mode)
