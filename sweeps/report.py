"""Leaderboards of finished sweeps: ranked rows, printed as a table and written as CSV and Markdown."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    job: int
    overrides: dict[str, str]
    state: str
    objective: float = math.nan
    epochs: int = 0
    seconds: float = 0.0
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def rank(rows: Sequence[Row], mode: str) -> list[Row]:
    """Finished runs best first (by ``mode``), then the rest in job order."""
    done = [r for r in rows if not math.isnan(r.objective)]
    done.sort(key=lambda r: r.objective, reverse=mode == "max")
    return done + [r for r in rows if math.isnan(r.objective)]


def _cells(rows: Sequence[Row], metric: str) -> tuple[list[str], list[list[str]]]:
    keys = list(dict.fromkeys(k for r in rows for k in r.overrides))
    head = ["rank", "job", *keys, metric, "epochs", "time", "state"]
    body = []
    for i, r in enumerate(rows, 1):
        value = "" if math.isnan(r.objective) else f"{r.objective:.4f}"
        state = r.state if not r.reason else f"{r.state}: {r.reason}"
        body.append(
            [
                str(i),
                str(r.job),
                *(r.overrides.get(k, "") for k in keys),
                value,
                str(r.epochs),
                f"{r.seconds:.1f}s",
                state,
            ]
        )
    return head, body


def table(rows: Sequence[Row], metric: str) -> str:
    head, body = _cells(rows, metric)
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
