"""The default journal file survives processes killed while they held Optuna's lock on it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import cli_env, run_cli, start_cli
from tests.test_search import children, studies

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

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


def test_a_dangling_lock_is_released_at_once_and_the_search_goes_on(workdir: Path):
    first = run_cli([*ARGS, "hydra.sweeper.n_trials=1"], cwd=workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    lock = workdir / "mlruns" / "optuna.journal.lock"
    lock.symlink_to("mlruns/optuna.journal")  # what a killed holder of an older version left: it dangles
    second = run_cli([*ARGS, "hydra.sweeper.n_trials=2"], cwd=workdir, timeout=60)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "released a stale journal lock" in second.stdout + second.stderr
    assert not lock.is_symlink()
    (study,) = studies(workdir)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2


@pytest.mark.timeout(900)
@pytest.mark.parametrize("round_", range(3))
def test_a_two_worker_search_killed_four_times_finishes_with_every_trial_once(workdir: Path, round_: int):
    """Kills at random moments, some while a process holds the journal's lock: the next command still ends."""
    tracked = [a for a in ARGS if a != "tracking=off"]  # tracked, so that no MLflow run may stay RUNNING
    args = [*tracked, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "trainer.max_epochs=8"]
    rng = random.Random(round_)
    kept: dict[int, dict] = {}
    for _ in range(4):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        proc = start_cli(args, workdir, start_new_session=True, **quiet)
        wait_for_a_running_trial(workdir, proc)
        time.sleep(rng.uniform(0.0, 3.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for study in studies(workdir):
            kept.update({t.number: t.params for t in study.get_trials(states=FINISHED)})
    last = run_cli(args, cwd=workdir, timeout=300)
    assert last.returncode == 0, last.stderr[-3000:]
    (study,) = studies(workdir)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert {t.number: t.params for t in finished if t.number in kept} == kept
    assert not [r for r in children(workdir) if r.info.status == "RUNNING"]


def wait_for_a_running_trial(workdir: Path, proc: subprocess.Popen, limit: float = 120) -> None:
    """Until the study holds a RUNNING trial (or the command ended by itself)."""
    deadline = time.monotonic() + limit
    journal = workdir / "mlruns" / "optuna.journal"
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and any(s.get_trials(states=(TrialState.RUNNING,)) for s in studies(workdir)):
            return
        time.sleep(0.2)
