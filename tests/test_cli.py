"""The command line as a user meets it: the default sweep, grids, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import run_cli

FAST = ["trainer.max_epochs=2", "trainer.limit_train_batches=3"]


def test_default_sweep_prints_a_table_of_both_runs(workdir: Path):
    proc = run_cli(["-m", "optimizer=adam,sgd", *FAST], cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    table = out[out.index("rank") :].splitlines()
    assert "optimizer" in table[0] and "val_acc" in table[0]
    head = table[0].split()
    rows = [dict(zip(head, line.split(), strict=True)) for line in table[2:4]]
    assert {r["optimizer"] for r in rows} == {"adam", "sgd"}
    assert all(r["state"] == "FINISHED" and float(r["val_acc"]) > 0 for r in rows)
    board = list((workdir / "mlruns" / "multirun").glob("*/*/leaderboard.csv"))
    assert len(board) == 1
    assert len(list(csv.reader(board[0].open()))) == 3


def test_loss_optimizer_lr_grid_runs_every_combination(workdir: Path):
    args = ["-m", "loss=cross_entropy,soft_f1", "optimizer=adam,sgd", "lr=1e-3,1e-2"]
    proc = run_cli(
        [*args, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "checkpoint=false"], cwd=workdir
    )
    assert proc.returncode == 0, proc.stderr
    board = next((workdir / "mlruns" / "multirun").glob("*/*/leaderboard.csv"))
    rows = list(csv.DictReader(board.open()))
    assert len(rows) == 8
    combos = {(r["loss"], r["optimizer"], r["lr"]) for r in rows}
    assert len(combos) == 8


def test_failed_job_does_not_stop_the_sweep(workdir: Path):
    proc = run_cli(
        ["-m", "optimizer=sgd", "lr=10,1e-2", "trainer.max_epochs=2", "early_stopping_patience=0"],
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    board = next((workdir / "mlruns" / "multirun").glob("*/*/leaderboard.csv"))
    states = {r["lr"]: r["state"] for r in csv.DictReader(board.open())}
    assert states["0.01"] == "FINISHED"
    assert states["10"].startswith("FAILED: NonFiniteLoss")
    assert list((workdir / "mlruns" / "multirun").glob("*/*/0/error.txt"))


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["lr=0"], "lr"),
        (["lr=-1"], "lr"),
        (["optimizer.beta1=1.0"], "optimizer.beta1"),
        (["optimizer.beta2=-0.1"], "optimizer.beta2"),
        (["weight_decay=-0.01"], "weight_decay"),
        (["loss=log_loss"], "log_loss"),
        (["loss=soft_f1", "data=diabetes"], "soft_f1"),
        (["data=csv", "data.path=/nonexistent/file.csv", "data.target=y"], "data.path"),
        (["-m", "lr=1e-3,-5"], "lr"),
        (["objective.reduce=mean"], "objective.reduce"),
    ],
)
def test_bad_input_fails_before_training_with_one_line(workdir: Path, args: list[str], names: str):
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and names in lines[0]
    assert "epoch" not in proc.stdout + proc.stderr
    assert not list(workdir.glob("mlruns/**/checkpoints"))


def test_missing_csv_column_names_the_columns(workdir: Path):
    table = workdir / "t.csv"
    table.write_text("a,b,y\n1,2,0\n3,4,1\n")
    proc = run_cli(["data=csv", f"data.path={table}", "data.target=label"], cwd=workdir)
    assert proc.returncode == 2
    assert "data.target='label'" in proc.stderr and "a, b, y" in proc.stderr


def test_unknown_group_option_names_the_closest_and_lists_the_available_ones(workdir: Path):
    proc = run_cli(["optimizer=adamx"], cwd=workdir)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: optimizer=adamx: no such option (did you mean adam")
    assert "rmsprop" in line
