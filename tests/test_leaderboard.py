"""Leaderboards: ranking, the table, and what the parent run records."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from sweeps.outcome import Outcome, Pruned, State
from sweeps.tracking.leaderboard import Row, markdown, rank, short, summary, table, write_csv


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
    assert first["job"] == "2" and first["val_acc"] == "0.9" and first["run"] == "b" * 32  # whole values


def long_rows() -> list[Row]:
    """A search's rows as Optuna samples them (floats to the last digit), a long list value, long reasons."""
    found = []
    for job in range(12):
        overrides = {
            "lr": repr(0.0013292918943162175 * (job + 1)),
            "optimizer.beta1": repr(0.8123456789012345 + job / 1000),
            "model.hidden": "[512,512,512,512,512,512,512,512]",
            "loss": "cross_entropy",
        }
        if job % 4 == 3:
            outcome = Outcome.of_error(ValueError("the loss became NaN at epoch 3 " + "and more words " * 9))
        else:
            outcome = Outcome(
                State.FINISHED, 0.912345678 - job / 100, epochs=20, seconds=12.3, run_id="c" * 32
            )
        found.append(Row.of(job, overrides, outcome))
    return found


def test_printed_table_fits_120_columns_with_4_significant_digits_and_the_csv_keeps_every_digit(
    tmp_path: Path,
):
    ranked = rank(long_rows(), "max")
    text = table(ranked, "val_acc")
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert "0.001329 " in text and "0.0013292918943162175" not in text
    assert "0.8123 " in text and "0.9123 " in text and "cross_entropy" in text
    assert "…" in text  # the list and the reasons are cut, not the numbers
    write_csv(ranked, "val_acc", tmp_path / "l.csv")
    read = list(csv.DictReader((tmp_path / "l.csv").open()))
    assert {r["lr"] for r in read} == {repr(0.0013292918943162175 * (j + 1)) for j in range(12)}
    assert read[0]["model.hidden"] == "[512,512,512,512,512,512,512,512]"
    assert read[0]["val_acc"] == repr(0.912345678)
    assert any(len(r["state"]) > 150 and r["state"].endswith("and more words") for r in read)


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


def test_short_rounds_long_numbers_only():
    assert short("0.0013292918943162175") == "0.001329" and short("0.1") == "0.1" and short("1e-3") == "1e-3"
    assert short("128") == "128" and short("adam") == "adam" and short("[0.5,0.25]") == "[0.5,0.25]"
    assert short("12345.678") == "1.235e+04" and short("true") == "true"
