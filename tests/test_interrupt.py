"""Ctrl-C, SIGTERM and SIGHUP as a terminal sends them: to the command's whole process group, with SIGINT at
its default (a background job of a non-interactive shell would ignore it). Nothing is left RUNNING, no
process prints a traceback, the command says what was kept in one line and exits 128 + n."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli, start_cli
from tests.test_search import studies
from tests.test_tracking import all_runs, store

SEARCH = [
    "-m",
    "lr=tag(log, interval(1e-3, 1e-2))",
    "hydra/sweeper/sampler=random",
    "hydra/sweeper/pruner=none",
    "hydra.sweeper.n_trials=2",
    "trainer.max_epochs=25",
    "early_stopping_patience=0",
    "checkpoint=false",
    "verbose=true",  # the epoch lines the signal is sent on
]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signalled(
    args: list[str], workdir: Path, when: str, signum: int, timeout: float = 240
) -> tuple[int, str]:
    """Run the command in a process group of its own, send ``signum`` to the group when a line of its output
    matches ``when``; its exit code and whole output."""
    proc = start_cli(args, workdir, start_new_session=True, preexec_fn=_default_sigint)
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if re.search(when, line):
                os.killpg(proc.pid, signum)
                break
        rest, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, "".join(seen) + rest


def running(workdir: Path) -> list:
    return [r for r in all_runs(store(workdir)) if r.info.status == "RUNNING"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ctrl_c_in_a_search_closes_its_runs_and_trials_and_the_same_command_finishes(workdir: Path):
    code, out = signalled(SEARCH, workdir, r"\[job 1\] epoch 2/", signal.SIGINT)
    assert code == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines()[-1].startswith("error: stopped by Ctrl-C: 1 finished trials of study")
    assert running(workdir) == []
    killed = [r for r in all_runs(store(workdir)) if r.info.status == "KILLED"]
    assert {r.data.tags["sweeplab.kind"] for r in killed} == {"sweep", "run"}
    (study,) = studies(workdir)
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["sweeplab.reason"] == "interrupted by the user (SIGINT)"
    again = run_cli(SEARCH, workdir)  # the interrupted trial's parameters were queued again
    assert again.returncode == 0, again.stderr[-3000:]
    # the resumed study's leaderboard: the interrupted trial stopped, not a failure with an error.txt
    assert "STOPPED: interrupted by the user (SIGINT)" in again.stdout, again.stdout[-3000:]
    assert "runs failed" not in again.stdout + again.stderr
    # ... and names the run of every trial, the first command's too
    board = max(workdir.glob("mlruns/multirun/*/*/leaderboard.csv"), key=lambda p: p.stat().st_mtime)
    named = {row.split(",")[1]: row.split(",")[2] for row in board.read_text().splitlines()[1:]}
    runs = {r.data.tags.get("sweeplab.trial"): r.info.run_id for r in all_runs(store(workdir))}
    assert named == {job: runs[job] for job in named} and len(named) == 3, (named, runs)
    (study,) = studies(workdir)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2 and complete[1].params == study.trials[1].params
    assert running(workdir) == []


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_search_stopped_in_its_first_trial_shows_that_trial_stopped_when_resumed(workdir: Path):
    """With no trial finished before the Ctrl-C, the resumed study's leaderboard still has the interrupted
    trial (STOPPED, beside its retry), not only the trials of the command that resumed it."""
    code, out = signalled(SEARCH, workdir, r"\[job 0\] epoch 2/", signal.SIGINT)
    assert code == 130, out[-3000:]
    assert out.strip().splitlines()[-1].startswith("error: stopped by Ctrl-C: 0 finished trials of study")
    again = run_cli(SEARCH, workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "STOPPED: interrupted by the user (SIGINT)" in again.stdout, again.stdout[-3000:]
    board = max(workdir.glob("mlruns/multirun/*/*/leaderboard.csv"), key=lambda p: p.stat().st_mtime)
    assert len(board.read_text().splitlines()) == 1 + 3  # the stopped trial, its retry, the second trial


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hang_up_during_a_single_run_closes_it_killed_without_a_traceback(workdir: Path):
    args = ["trainer.max_epochs=200", "early_stopping_patience=0", "checkpoint=false"]
    code, out = signalled(args, workdir, r"epoch 2/", signal.SIGHUP)
    assert code == 128 + signal.SIGHUP, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines()[-1] == (
        "error: stopped by SIGHUP: the run is recorded as KILLED; run the same command to train it again"
    )
    (run,) = all_runs(store(workdir))
    assert run.info.status == "KILLED"
    assert run.data.tags["sweeplab.reason"] == "interrupted by the user (SIGHUP)"
    assert (
        subprocess.run(["grep", "-rl", "Traceback", str(workdir / "mlruns")], capture_output=True).stdout
        == b""
    )


GRID = [
    "-m",
    "lr=1e-3,3e-3,1e-2,3e-2",
    "trainer.max_epochs=3",
    "early_stopping_patience=0",
    "checkpoint=false",
]


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_grid_stopped_after_two_jobs_resumes_with_the_other_two(workdir: Path, signum: int):
    code, out = signalled(GRID, workdir, r"\t#2 : ", signum)  # Hydra's line as job 2 starts
    assert code == (128 + signum if signum != signal.SIGKILL else -signum), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    if signum != signal.SIGKILL:
        said = out.strip().splitlines()[-1]  # "(checkpoint ...)" after SIGTERM where it came in training
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        assert said.startswith(f"error: stopped by {name}")
        assert said.endswith(": 2 of 4 runs finished and are kept; the same command runs the other 2")
        assert running(workdir) == []
    again = run_cli(GRID, workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(re.findall(r"\t#\d+ : ", again.stdout + again.stderr)) == 2  # Hydra's line as each job starts
    runs = all_runs(store(workdir))
    (parent,) = [r for r in runs if r.data.tags["sweeplab.kind"] == "sweep"]
    assert parent.info.status == "FINISHED"
    finished = [r for r in runs if r.data.tags["sweeplab.kind"] == "run" and r.info.status == "FINISHED"]
    assert sorted(r.data.params["lr"] for r in finished) == ["0.001", "0.003", "0.01", "0.03"]
    (board,) = workdir.glob("mlruns/multirun/*/*/leaderboard.csv")  # one folder
    assert len(board.read_text().strip().splitlines()) == 1 + 4
    assert running(workdir) == []


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ctrl_c_in_a_search_with_two_workers_closes_every_run_and_the_same_command_finishes(workdir: Path):
    # Both workers write through the sweep's one tracking process: each closes its trial's run KILLED
    # through it before the sweep closes the parent run and the process.
    args = [*SEARCH, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "trainer.max_epochs=40"]
    code, out = signalled(args, workdir, r"\[job 1\] epoch 3/", signal.SIGINT)
    assert code == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines()[-1].startswith("error: stopped by Ctrl-C:")
    assert running(workdir) == []
    killed = [r for r in all_runs(store(workdir)) if r.info.status == "KILLED"]
    assert {r.data.tags["sweeplab.kind"] for r in killed} == {"sweep", "run"}
    reasons = [r.data.tags.get("sweeplab.reason") for r in killed if r.data.tags["sweeplab.kind"] == "run"]
    assert reasons and set(reasons) == {"interrupted by the user (SIGINT)"}, reasons
    (study,) = studies(workdir)
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert stopped and all(
        t.user_attrs["sweeplab.reason"] == "interrupted by the user (SIGINT)" for t in stopped
    )
    again = run_cli(args, workdir)  # the interrupted trials' parameters were queued again
    assert again.returncode == 0, again.stderr[-3000:]
    (study,) = studies(workdir)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert running(workdir) == []


def test_a_stop_swallowed_in_a_destructor_prints_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A signal that lands while Python runs a destructor or weakref callback raises there, and Python
    swallows it ("Exception ignored in ..."): the hook prints nothing for it (the stop is noted and acted on
    later) and passes anything else on."""
    import sys

    from sweeps.support import interrupt

    class Raises:
        def __init__(self, err: BaseException) -> None:
            self.err = err

        def __del__(self) -> None:
            raise self.err

    saved = sys.unraisablehook
    try:
        interrupt.install(())
        Raises(interrupt.Interrupted(2))  # dropped at once: its destructor raises, Python swallows it
        assert "Traceback" not in capsys.readouterr().err
        Raises(ValueError("other"))
        assert "ValueError: other" in capsys.readouterr().err
    finally:
        sys.unraisablehook = saved
