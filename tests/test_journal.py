"""The default journal file survives processes killed while they held Optuna's lock on it, and a
damaged record: a torn last one is moved aside and the search resumes, damage before the end is
refused."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweeps.search.journal import check
from sweeps.search.study import storage as study_storage
from sweeps.support.errors import ConfigError
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


@pytest.mark.timeout(450)  # run_cli 240 + 30 + run_cli 120, + 60
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
    # 40 epochs of small batches each (about 4 s a trial): a kill, up to 3 s after a trial began, finds work
    args = [*tracked, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "trainer.max_epochs=40"]
    args += ["early_stopping_patience=0", "data.batch_size=16"]
    rng = random.Random(round_)
    kept: dict[int, dict] = {}
    kills = 0
    for _ in range(4):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        proc = start_cli(args, workdir, start_new_session=True, **quiet)
        wait_for_a_running_trial(workdir, proc)
        time.sleep(rng.uniform(0.0, 3.0))
        if proc.poll() is not None:  # it finished the study before the kill came: no work is left
            assert proc.returncode == 0
            break
        os.killpg(proc.pid, signal.SIGKILL)
        kills += 1
        proc.wait(timeout=30)
        for study in studies(workdir):
            kept.update({t.number: t.params for t in study.get_trials(states=FINISHED)})
    assert kills >= 2  # the study outlived at least two kills
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


# A search of three trials, each one short epoch: what the damaged journals below start from.
SEARCH = ["-m", "search=lr_betas", "trainer.max_epochs=1", "trainer.limit_train_batches=5"]
SEARCH += ["checkpoint=false", "tracking=off"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose mlruns/optuna.journal holds a finished search of 3 trials (copied by each test)."""
    folder = tmp_path_factory.mktemp("searched")
    proc = run_cli([*SEARCH, "hydra.sweeper.n_trials=3"], cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def finished(workdir: Path) -> dict[int, dict]:
    (study,) = studies(workdir)
    return {t.number: t.params for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))}


def test_a_partial_last_record_is_moved_aside_and_the_search_resumes(searched: Path, workdir: Path):
    shutil.copytree(searched / "mlruns", workdir / "mlruns")
    journal = workdir / "mlruns" / "optuna.journal"
    before = finished(workdir)
    assert len(before) == 3
    last = journal.read_bytes().splitlines(keepends=True)[-1]
    torn = last[: len(last) // 2]  # a write cut short by a crash or a full disk
    with journal.open("ab") as f:
        f.write(torn)
    complete = journal.stat().st_size - len(torn)

    proc = run_cli([*SEARCH, "hydra.sweeper.n_trials=4"], cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (aside,) = journal.parent.glob("optuna.journal.*.damaged")
    assert aside.read_bytes() == torn  # the damaged bytes are kept, beside the journal
    (line,) = [s for s in proc.stderr.splitlines() if "damaged" in s]
    assert f"byte offset {complete}" in line and str(aside.relative_to(workdir)) in line
    after = finished(workdir)
    assert len(after) == 4
    assert {n: p for n, p in after.items() if n in before} == before  # every earlier finished trial kept


def test_a_journal_damaged_before_its_end_is_refused_without_a_write(searched: Path, workdir: Path):
    shutil.copytree(searched / "mlruns", workdir / "mlruns")
    journal = workdir / "mlruns" / "optuna.journal"
    data = bytearray(journal.read_bytes())
    offset = data.index(b"\n", len(data) // 2) + 1  # a record in the middle, from its first byte
    data[offset + 10 : offset + 14] = b"\x00\x00\x00\x00"  # bad sectors, say
    journal.write_bytes(bytes(data))

    proc = run_cli([*SEARCH, "hydra.sweeper.n_trials=4"], cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: mlruns/optuna.journal ")
    assert f"byte offset {offset} " in proc.stderr
    assert journal.read_bytes() == bytes(data)  # nothing written
    assert not list(journal.parent.glob("*.damaged"))


@pytest.mark.parametrize(
    ("tail", "kept"),
    [
        (b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}', False),  # no newline yet
        (b'{"op_code":0,"wor\n', False),  # cut, and a newline after it
        (b"\x00\x00\x00\x00", False),  # zeros a crash left
        (b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\n', True),  # a complete record
    ],
)
def test_check_keeps_complete_records_and_moves_a_damaged_last_one_aside(
    tmp_path: Path, tail: bytes, kept: bool, capsys: pytest.CaptureFixture[str]
):
    good = b'{"op_code":0,"worker_id":"w","study_name":"a","directions":[1]}\n'
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(good + tail)
    check(str(journal))
    damaged = list(tmp_path.glob("optuna.journal.*.damaged"))
    if kept:
        assert journal.read_bytes() == good + tail and not damaged
        assert capsys.readouterr().err == ""
    else:
        assert journal.read_bytes() == good and damaged[0].read_bytes() == tail
        (line,) = capsys.readouterr().err.splitlines()
        assert f"byte offset {len(good)}" in line and str(damaged[0]) in line
        assert not (tmp_path / "optuna.journal.lock").exists()  # Optuna's lock released


def test_check_refuses_damage_before_the_last_record(tmp_path: Path):
    good = b'{"op_code":0,"worker_id":"w","study_name":"a","directions":[1]}\n'
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(good + b'{"op_c\n' + good)
    with pytest.raises(ConfigError, match=f"byte offset {len(good)} "):
        check(str(journal))
    assert journal.read_bytes() == good + b'{"op_c\n' + good


def test_damage_that_looks_like_records_is_found_when_optuna_cannot_load_the_journal(tmp_path: Path):
    """The quick look (``{...}`` lines) passes a damaged record in the middle; Optuna's own load fails on
    it, and then every line is parsed to name its offset. Nothing is written."""
    good = b'{"op_code":0,"worker_id":"w","study_name":"a","directions":[1]}\n'
    data = good + b'{"op_code":0,"wor@@}\n' + good
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(data)
    check(str(journal))  # looks whole
    with pytest.raises(ConfigError, match=f"is damaged at byte offset {len(good)} "):
        study_storage(str(journal))
    assert journal.read_bytes() == data
