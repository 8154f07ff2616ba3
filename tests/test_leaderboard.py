"""Leaderboards: ranking, the table, and what the parent run records."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from sweeps.outcome import Outcome, Pruned, State
from sweeps.tracking.leaderboard import Row, markdown, rank, summary, table, write_csv


def rows() -> list[Row]:
    return [
        Row.of(0, {"lr": "0.1"}, Outcome(State.FINISHED, 0.8, epochs=3, seconds=1.0, run_id="a" * 32)),
        Row.of(1, {"lr": "0.01"}, Outcome.of_error(ValueError("diverged"))),
        Row.of(2, {"lr": "0.001"}, Outcome(State.FINISHED, 0.9, epochs=3, seconds=1.0, run_id="b" * 32)),
        Row.of(3, {"lr": "1.0"}, Outcome.of_error(Pruned(1, "val_acc", 0.1))),
    ]


def test_finished_rows_rank_best_first_then_the_rest_in_job_order():
    assert [r.job for r in rank(rows(), "max")] == [2, 0, 1, 3]
    assert [r.job for r in rank(rows(), "min")] == [0, 2, 1, 3]


def test_table_markdown_and_csv_show_state_and_reason(tmp_path: Path):
    ranked = rank(rows(), "max")
    text = table(ranked, "val_acc")
    assert text.splitlines()[0].split() == ["rank", "job", "run", "lr", "val_acc", "epochs", "time", "state"]
    assert "FAILED: ValueError: diverged" in text and "PRUNED: pruned after epoch 1" in text
    assert markdown(ranked, "val_acc").count("\n") == len(ranked) + 2
    write_csv(ranked, "val_acc", tmp_path / "l.csv")
    first = list(csv.DictReader((tmp_path / "l.csv").open()))[0]
    assert first["job"] == "2" and first["val_acc"] == "0.9000" and first["run"] == "b" * 8


def test_summary_counts_every_state_and_names_the_best():
    found = summary(rank(rows(), "max"), "val_acc")
    assert found["metrics"] == {
        "runs_total": 4.0,
        "runs_finished": 2.0,
        "runs_failed": 1.0,
        "runs_pruned": 1.0,
        "runs_stopped": 0.0,
        "best_val_acc": 0.9,
    }
    assert found["tags"]["sweeplab.best_run_id"] == "b" * 32 and found["best_overrides"] == "lr=0.001\n"
    assert summary([], "val_acc")["tags"] == {} and math.isnan(Row(0, {}, "FAILED").objective)
