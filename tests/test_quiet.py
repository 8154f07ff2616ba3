"""What a search prints by default: a line as each trial starts and one as it ends, then a leaderboard that
fits 120 columns; no library hint or warning (Lightning's srun hint on a machine with Slurm's client,
Optuna's one-parameter contour warning, Hydra's "Launching 1 jobs locally"). A resumed search's leaderboard
is the whole study's. ``-v`` brings the epoch lines back. Real processes: warnings print once per process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

NOISE = ("srun", "The length of params", "Launching ", "Warning", "warn(")
SEARCH = ["-m", "lr=tag(log, interval(1e-4, 1e-1))", "trainer.max_epochs=2"]


def fake_slurm(folder: Path) -> dict[str, str]:
    """An ``srun`` on the PATH, as on a Slurm login node: Lightning looks for it by name only."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def split(output: str) -> tuple[list[str], list[str]]:
    """(the lines about trials, the leaderboard's table lines)."""
    lines = [line for line in output.splitlines() if line.strip()]
    table = [line for line in lines if line.startswith(("rank ", "----")) or line[:1].isdigit()]
    board = [line for line in lines if line.startswith("stopped: ")]  # the leaderboard's last line
    return [line for line in lines if line not in table and line not in board], table


@pytest.mark.slow
@pytest.mark.timeout(720)
def test_a_12_trial_search_prints_two_lines_a_trial_and_a_resumed_one_the_whole_study(workdir: Path):
    env = fake_slurm(workdir)
    proc = run_cli([*SEARCH, "hydra.sweeper.n_trials=12"], cwd=workdir, env=env, timeout=600, subprocess=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    said, table = split(output)
    for noise in NOISE:
        assert noise not in output, noise
    # the study line, 12 x (start, finish), why it stopped, the best trial and where it is written
    assert len(said) <= 2 * 12 + 4, "\n".join(said)
    assert sum(" search: trial " in line and "/12 finished)" in line for line in said) == 12
    assert len(table) == 2 + 12 and max(len(line) for line in table) <= 120, "\n".join(table)

    again = run_cli([*SEARCH, "hydra.sweeper.n_trials=14", "-v"], cwd=workdir, env=env, subprocess=True)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    said, table = split(output)
    assert len(table) == 2 + 14, "\n".join(table)  # the whole study, not this command's 2 trials
    assert sum(" epoch 2/2 " in line for line in said) == 2, "\n".join(said)  # -v: each trial's epoch lines


@pytest.mark.slow
def test_every_epoch_line_of_a_seed_or_fold_names_it(workdir: Path):
    single = run_cli(["repeats=2", "trainer.max_epochs=2", "tracking=off"], cwd=workdir)
    assert single.returncode == 0, single.stderr[-3000:]
    epochs = [line for line in (single.stdout + single.stderr).splitlines() if " epoch " in line]
    assert len(epochs) == 4 and all("[seed=42]" in e or "[seed=43]" in e for e in epochs), epochs

    swept = run_cli(["-m", "optimizer=adam,sgd", "cv=2", "trainer.max_epochs=2", "-v"], cwd=workdir)
    assert swept.returncode == 0, swept.stderr[-3000:]
    epochs = [line for line in (swept.stdout + swept.stderr).splitlines() if " epoch " in line]
    labels = {e.split("] - ")[1].split("]")[0] for e in epochs}
    assert len(epochs) == 8 and labels == {f"[job {j} fold={k}/2" for j in (0, 1) for k in (1, 2)}, epochs

    quiet = run_cli(["-m", "optimizer=adam,sgd", "cv=2", "trainer.max_epochs=2"], cwd=workdir)
    said, _ = split(quiet.stdout + quiet.stderr)
    assert quiet.returncode == 0 and not any(" epoch " in line or "fold=" in line for line in said), said
