"""Leaderboards of finished sweeps: ranked rows, printed as a table and written as CSV and Markdown.

Rows of configurations trained on several seeds (``repeats``) show the mean +- the half-width of its 95%
interval and N; their ranks and verdicts come from ``stats`` (those the best does not beat share rank 1).

The printed table is for reading: numbers to 4 significant digits, and rows that fit ``WIDTH`` columns
(long values shortened with "…"). The CSV keeps every value whole (the sampled values to the last digit, the
full run ids); the Markdown file keeps the values whole with the numbers shortened.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sweeps.outcome import Outcome, test_metric_of
from sweeps.tracking import stats

WIDTH = 120  # the printed table's widest row
DIGITS = 4  # significant digits of the numbers it shows
NARROWEST = 8  # a shortened column keeps at least this many characters


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
    samples: dict[str, float] = field(default_factory=dict)  # each seed's objective (``repeats``)
    test: float = math.nan  # the objective's counterpart on the test split (val/acc -> test/acc), if tested

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
            dict(outcome.samples),
            outcome.metrics.get(test_metric_of(outcome.metric) or "", math.nan),
        )

    def name(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.overrides.items()) or f"job {self.job}"


def rank(rows: Sequence[Row], mode: str) -> list[Row]:
    """Finished runs best first (by ``mode``), then the rest in job order."""
    done = [r for r in rows if not math.isnan(r.objective)]
    done.sort(key=lambda r: r.objective, reverse=mode == "max")
    return done + [r for r in rows if math.isnan(r.objective)]


def repeated(rows: Sequence[Row]) -> bool:
    """Whether any row is a configuration trained on several seeds."""
    return any(len(r.samples) > 1 for r in rows)


def compared(ranked: Sequence[Row], mode: str) -> tuple[list[stats.Comparison], list[int]]:
    """The verdicts of the best of ``ranked`` (best first) against each other finished row, and every
    row's rank (rows that were not compared keep their place)."""
    finished = [i for i, r in enumerate(ranked) if r.samples and not math.isnan(r.objective)]
    comparisons = stats.verdicts([(ranked[i].name(), ranked[i].samples) for i in finished], mode)
    places = dict(zip(finished, stats.ranks(comparisons), strict=False))
    return comparisons, [places.get(i, i + 1) for i in range(len(ranked))]


def verdicts(ranked: Sequence[Row], metric: str, mode: str) -> list[str]:
    """The verdicts in words, best against each of the next ones ("... beats ... by ...")."""
    return [c.text(metric) for c in compared(ranked, mode)[0]] if repeated(ranked) else []


def short(value: str) -> str:
    """A number written with more digits (``0.0013292918943162175``) to ``DIGITS`` significant ones
    (``0.001329``); one written shorter (``0.1``), whole numbers and anything else as they are."""
    text = value.strip()
    if not any(c in text for c in ".eE") or text.lower() in ("true", "false", "none", "null"):
        return value
    try:
        number = float(text)
    except ValueError:
        return value
    rounded = f"{number:.{DIGITS}g}"
    return value if float(rounded) == number else rounded


def _number(value: float, whole: bool) -> str:
    return repr(value) if whole else f"{value:#.{DIGITS}g}"  # "#": 0.9500, as wide as its neighbours


def _value(r: Row, spread: bool, whole: bool = False) -> str:
    if math.isnan(r.objective):
        return ""
    if not spread or len(r.samples) < 2:
        return _number(r.objective, whole)
    half = stats.spread(list(r.samples.values())).half_width
    return f"{_number(r.objective, whole)} ± {_number(half, whole)}"


def _cells(
    rows: Sequence[Row], metric: str, mode: str = "max", whole: bool = False
) -> tuple[list[str], list[list[str]]]:
    """The head and the rows' cells: ``whole`` values (the CSV) or numbers to ``DIGITS`` digits."""
    keys = list(dict.fromkeys(k for r in rows for k in r.overrides))
    spread = repeated(rows)
    ranks = compared(rows, mode)[1] if spread else list(range(1, len(rows) + 1))
    shown = f"{metric} (mean ± 95% CI)" if spread else metric
    test = test_metric_of(metric) if any(not math.isnan(r.test) for r in rows) else None
    head = ["rank", "job", "run", *keys, shown, *(["n"] if spread else []), *([test] if test else [])]
    head += ["epochs", "time", "state"]
    body = []
    for i, r in zip(ranks, rows, strict=True):
        state = r.state if not r.reason else f"{r.state}: {r.reason}"
        body.append(
            [
                str(i),
                str(r.job),
                r.run_id if whole else r.run_id[:8],
                *(r.overrides.get(k, "") if whole else short(r.overrides.get(k, "")) for k in keys),
                _value(r, spread, whole),
                *([str(len(r.samples))] if spread else []),
                *([f"{r.test:.4f}" if not math.isnan(r.test) else ""] if test else []),
                str(r.epochs),
                f"{r.seconds:.1f}s",
                state,
            ]
        )
    return head, body


def table(rows: Sequence[Row], metric: str, mode: str = "max") -> str:
    """The leaderboard to print: it fits ``WIDTH`` columns, the override and state columns shortened
    (widest first) where it would not."""
    head, body = _cells(rows, metric, mode)
    keys = len(dict.fromkeys(k for r in rows for k in r.overrides))  # override columns, after rank, job, run
    return aligned(head, body, WIDTH, shrink=[*range(3, 3 + keys), len(head) - 1])


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def aligned(
    head: list[str], body: list[list[str]], width: int | None = None, shrink: Sequence[int] = ()
) -> str:
    """A plain-text table: columns padded to their widest cell, a rule under the head; with a ``width``,
    the ``shrink`` columns are cut (widest first, to ``NARROWEST`` at least) until a row fits in it."""
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=False)]
    while width and shrink and sum(widths) + 2 * (len(widths) - 1) > width:
        widest = max(shrink, key=lambda i: widths[i])
        if widths[widest] <= NARROWEST:
            break
        widths[widest] -= 1
    head = [_cut(c, w) for c, w in zip(head, widths, strict=False)]
    body = [[_cut(c, w) for c, w in zip(line, widths, strict=False)] for line in body]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip() for line in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: Sequence[Row], metric: str, mode: str = "max") -> str:
    head, body = _cells(rows, metric, mode)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
    said = verdicts(rows, metric, mode)
    if said:
        lines += ["", f"Verdicts ({stats.METHOD}):", "", *(f"- {v}" for v in said)]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Row], metric: str, path: Path, mode: str = "max") -> None:
    """Every value whole: the sampled values to their last digit, the objective as Python writes it."""
    head, body = _cells(rows, metric, mode, whole=True)
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
        if len(best.samples) > 1:  # repeats: the best configuration's spread
            spread = stats.spread(list(best.samples.values()))
            metrics.update(
                {
                    f"best_{metric}_std": spread.std,
                    f"best_{metric}_ci_low": spread.low,
                    f"best_{metric}_ci_high": spread.high,
                    "best_n": float(spread.n),
                }
            )
        tags = {"sweeplab.best_run_id": best.run_id, "sweeplab.best_job": str(best.job)}
        best_overrides = "\n".join(f"{k}={v}" for k, v in best.overrides.items()) + "\n"
        tags["sweeplab.best_config"] = " ".join(f"{k}={v}" for k, v in best.overrides.items())
    return {"metrics": metrics, "tags": tags, "best_overrides": best_overrides}
