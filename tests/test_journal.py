"""The default journal file survives a process killed while it held Optuna's lock on it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from optuna.trial import TrialState

from tests.conftest import cli_env, run_cli
from tests.test_search import studies

ARGS = ["-m", "lr=tag(log, interval(1e-3, 1e-1))", "trainer.max_epochs=2", "checkpoint=false", "tracking=off"]

# Takes the journal's lock as sweeplab opens it, says so, and waits to be killed.
HOLDER = """
import time
from optuna.storages.journal import JournalFileSymlinkLock
from sweeps.search.study import DEFAULT_STORAGE, journal_path
JournalFileSymlinkLock(journal_path(DEFAULT_STORAGE)).acquire()
print("holding", flush=True)
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_is_released_and_the_search_goes_on(workdir: Path):
    first = run_cli([*ARGS, "hydra.sweeper.n_trials=1"], cwd=workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (workdir / "mlruns" / "optuna.journal.lock").is_symlink()  # what the killed holder left
    second = run_cli([*ARGS, "hydra.sweeper.n_trials=2"], cwd=workdir, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Forcibly releasing the lock file" in second.stderr  # Optuna's grace period (30 s) applied
    (study,) = studies(workdir)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2  # the first run's trial is kept
