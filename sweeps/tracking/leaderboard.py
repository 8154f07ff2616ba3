"""Leaderboards of finished sweeps: ranked rows, printed as a table and written as CSV and Markdown."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sweeps.outcome import Outcome


@dataclass
class Row:
    job: int
    overrides: dict[str, str]
    state: str  # an ``outcome.State`` value
    objective: float = math.nan
    epochs: int = 0
    seconds: float = 0.0
    reason: str = ""
    run_id: str = ""

    @classmethod
    def of(cls, job: int, overrides: dict[str, str], outcome: Outcome, seconds: float | None = None) -> Row:
        """The row of a job that ended with ``outcome`` (``seconds``: its wall time, if not the fit's)."""
        return cls(
            job,
            overrides,
            outcome.state.value,
            outcome.value,
            outcome.epochs,
            outcome.seconds if seconds is None else seconds,
            outcome.reason,
            outcome.run_id,
        )


def rank(rows: Sequence[Row], mode: str) -> list[Row]:
    """Finished runs best first (by ``mode``), then the rest in job order."""
    done = [r for r in rows if not math.isnan(r.objective)]
    done.sort(key=lambda r: r.objective, reverse=mode == "max")
    return done + [r for r in rows if math.isnan(r.objective)]


def _cells(rows: Sequence[Row], metric: str) -> tuple[list[str], list[list[str]]]:
    keys = list(dict.fromkeys(k for r in rows for k in r.overrides))
    head = ["rank", "job", "run", *keys, metric, "epochs", "time", "state"]
    body = []
    for i, r in enumerate(rows, 1):
        value = "" if math.isnan(r.objective) else f"{r.objective:.4f}"
        state = r.state if not r.reason else f"{r.state}: {r.reason}"
        body.append(
            [
                str(i),
                str(r.job),
                r.run_id[:8],
                *(r.overrides.get(k, "") for k in keys),
                value,
                str(r.epochs),
                f"{r.seconds:.1f}s",
                state,
            ]
        )
    return head, body


def table(rows: Sequence[Row], metric: str) -> str:
    return aligned(*_cells(rows, metric))


def aligned(head: list[str], body: list[list[str]]) -> str:
    """A plain-text table: columns padded to their widest cell, a rule under the head."""
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=False)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip() for line in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: Sequence[Row], metric: str) -> str:
    head, body = _cells(rows, metric)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Row], metric: str, path: Path) -> None:
    head, body = _cells(rows, metric)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        writer.writerows(body)


def summary(ranked: Sequence[Row], metric: str) -> dict:
    """What the parent run of a sweep records: counts, the best value and the configuration that gave it."""
    counts = {
        state: sum(r.state == state for r in ranked) for state in ("FINISHED", "FAILED", "PRUNED", "STOPPED")
    }
    metrics = {"runs_total": float(len(ranked)), **{f"runs_{k.lower()}": float(v) for k, v in counts.items()}}
    tags = {}
    best_overrides = ""
    best = ranked[0] if ranked and not math.isnan(ranked[0].objective) else None
    if best is not None:
        metrics[f"best_{metric}"] = best.objective
        tags = {"sweeplab.best_run_id": best.run_id, "sweeplab.best_job": str(best.job)}
        best_overrides = "\n".join(f"{k}={v}" for k, v in best.overrides.items()) + "\n"
        tags["sweeplab.best_config"] = " ".join(f"{k}={v}" for k, v in best.overrides.items())
    return {"metrics": metrics, "tags": tags, "best_overrides": best_overrides}
