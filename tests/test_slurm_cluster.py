"""A search as jobs of a real Slurm (``tests/slurm_cluster.py``: munged, slurmctld and slurmd on loopback):
one 6-trial search with 2 jobs in flight, in which one job is requeued (``scontrol requeue``) and one
cancelled (``scancel``) mid-training, as a cluster's admin or a user would."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tests import slurm_cluster
from tests.conftest import cli_env
from tests.test_readme_figures import README


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm_cluster.Cluster]:
    """A real single-node Slurm for this module. Skipped without Debian's packages, except under CI (env
    ``CI`` set), where it fails: .ci/run installs them. Every daemon is gone when the module is done."""
    if not slurm_cluster.installed():
        message = "Slurm is not installed (.ci/run installs slurmctld, slurmd, slurm-client and munge)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so these tests must run", pytrace=False)
        pytest.skip(message)
    # A node silent for 10 s is down (the node-death test waits that long, plus Slurm's ping interval).
    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"), slurmd_timeout=10)
    try:
        yield cluster
    finally:
        cluster.stop()
        left = [name for name, proc in cluster.procs.items() if proc.poll() is None]
        left += [f"slurmstepd {pid}" for pid in slurm_cluster._stepds(cluster.folder)]
        assert not left, f"still running after the tests: {left}"


class Sweep:
    """``python -m sweeps.run -m ...`` against the cluster, its output read as it comes."""

    def __init__(self, args: list[str], cwd: Path, cluster: slurm_cluster.Cluster) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sweeps.run", *args],
            cwd=cwd,
            env=cli_env({"SLURM_CONF": cluster.env["SLURM_CONF"]}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def job_of(self, trial: int) -> str | None:
        """The Slurm job id the sweep printed for ``trial`` (``#N : overrides (Slurm job ID)``)."""
        for line in self.lines:
            found = re.search(rf"#{trial} : .*\(Slurm job (\d+)\)", line)
            if found:
                return found.group(1)
        return None

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


def job_log(workdir: Path, job: str, stream: str = "out") -> str:
    """What a job wrote so far (every attempt of it: Slurm appends)."""
    found = list(workdir.glob(f"mlruns/multirun/*/*/.submitit/{job}/{job}_0_log.{stream}"))
    return found[0].read_text(errors="replace") if found else ""


def until(what: str, check, timeout: float, sweep: Sweep, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if sweep.proc.poll() is not None:
            break
        time.sleep(every)
    raise AssertionError(f"{what} did not happen in {timeout:.0f}s:\n{sweep.output[-4000:]}")


EPOCHS = 30


def readme_command() -> list[str]:
    """The arguments of the README's Slurm recipe (its ``python -m sweeps.run`` command)."""
    section = README.read_text(encoding="utf-8").split("### Slurm\n", 1)[1].split("\n### ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    command = block.replace("\\\n", " ").split("\n")
    (line,) = [c for c in command if "-m sweeps.run" in c]
    words = shlex.split(line.split("#", 1)[0])
    assert words[:3] == [".venv/bin/python", "-m", "sweeps.run"], words
    return words[3:]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_search_as_slurm_jobs_survives_a_requeue_and_retries_a_cancelled_trial(
    slurm: slurm_cluster.Cluster, tmp_path: Path
):
    args = [
        *readme_command(),
        f"trainer.max_epochs={EPOCHS}",
        "early_stopping_patience=0",
        "trainer.num_threads=1",
        "data.batch_size=16",  # slower epochs: the signals below land mid-training
    ]
    sweep = Sweep(args, tmp_path, slurm)
    requeued = until("trial 0's job", lambda: sweep.job_of(0), 120, sweep)
    cancelled = until("trial 1's job", lambda: sweep.job_of(1), 60, sweep)
    # Both in flight at once, as squeue shows them.
    until(
        "2 jobs running",
        lambda: [slurm.jobs().get(j) for j in (requeued, cancelled)] == ["RUNNING"] * 2,
        60,
        sweep,
        every=1,
    )
    # What each trial asked for (the README's hydra.launcher.*), as Slurm holds it: GPU, CPUs, memory, time.
    asked = slurm.command("squeue", "-h", f"--jobs={requeued},{cancelled}", "-o", "%b %C %m %l").splitlines()
    assert asked == ["gres:gpu:1 1 1G 10:00"] * 2, asked
    # Each job stopped as soon as it is at epoch 2 (both are watched at once: a trial trains in seconds).
    todo = {requeued: ("scontrol", "requeue"), cancelled: ("scancel",)}

    def stop_those_at_epoch_2() -> bool:
        for job in [j for j in todo if "epoch 2/" in job_log(tmp_path, j)]:
            slurm.command(*todo.pop(job), job)
        return not todo

    until("both jobs at epoch 2", stop_those_at_epoch_2, 120, sweep, every=0.1)
    code = sweep.wait(timeout=300)
    out = sweep.output
    assert code == 0, out[-5000:]

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "mlruns" / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(finished) == 6 and len(trials) == 7, [(t.number, t.state) for t in trials]
    # The cancelled trial failed with the reason, and its parameters ran again.
    (cancel,) = failed
    assert (
        cancel.number == 1
        and f"Slurm job {cancelled} ended CANCELLED" in cancel.user_attrs["sweeplab.reason"]
    )
    (retry,) = [t for t in trials if t.user_attrs.get("sweeplab.retry_of") == 1]
    assert retry.params == cancel.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    # The requeued trial is one trial, complete, each epoch reported once.
    (first,) = [t for t in trials if t.number == 0]
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == list(
        range(1, EPOCHS + 1)
    )
    assert all(
        t.intermediate_values for t in finished
    )  # every job reported to its trial (the pruner's input)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeplab")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("sweeplab.kind") == "sweep"]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("sweeplab.kind") == "run"]
    by_trial: dict[int, list] = {}
    for run in sorted(children, key=lambda r: r.info.start_time):
        by_trial.setdefault(int(run.data.tags["sweeplab.trial"]), []).append(run)
    assert sorted(by_trial) == sorted(t.number for t in trials)  # every trial has its runs
    assert [r.info.status for r in by_trial[0]] == ["KILLED", "FINISHED"]
    assert [r.info.status for r in by_trial[1]] == ["KILLED"]
    assert "SIGTERM" in by_trial[0][0].data.tags["sweeplab.reason"]
    assert all(len(by_trial[t.number]) == 1 for t in trials if t.number > 1)
    # The requeued job resumed from its checkpoint: the second run trains only the epochs the first did not.
    killed, resumed = by_trial[0]
    before = [m.step for m in client.get_metric_history(killed.info.run_id, "val_acc")]
    after = [m.step for m in client.get_metric_history(resumed.info.run_id, "val_acc")]
    print(f"requeued trial 0: epochs {before} in run {killed.info.run_id[:8]}, {after} in the resumed one")
    assert before and after and not set(before) & set(after)
    assert before + after == list(range(1, EPOCHS + 1))  # each epoch once, in order
    assert "stopped by SIGTERM" in job_log(tmp_path, requeued, "err")
    assert "resuming from" in job_log(tmp_path, requeued)
    script = next(
        tmp_path.glob(f"mlruns/multirun/*/*/.submitit/{requeued}/{requeued}_submission.sh")
    ).read_text()
    for option in ("--gres=gpu:1", "--cpus-per-task=1", "--mem=1GB", "--time=10", "--signal=USR2@120"):
        assert f"#SBATCH {option}\n" in script, script
    leaderboard = next(tmp_path.glob("mlruns/multirun/*/*/leaderboard.csv")).read_text().splitlines()
    assert len([line for line in leaderboard if line]) == 1 + 7


def descendants(pids: list[int]) -> list[int]:
    """Every process below ``pids`` (by their parent ids in /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_a_trial_whose_node_dies_has_its_run_closed_as_stale_and_runs_again(
    slurm: slurm_cluster.Cluster, tmp_path: Path
):
    one = {"hydra.sweeper.n_trials": "1", "hydra.sweeper.n_jobs": "1"}
    args = [a for a in readme_command() if a.split("=", 1)[0] not in one]
    args += [f"{k}={v}" for k, v in one.items()]
    args += [f"trainer.max_epochs={EPOCHS}", "early_stopping_patience=0", "trainer.num_threads=1"]
    args += ["data.batch_size=16"]
    sweep = Sweep(args, tmp_path, slurm)
    job = until("trial 0's job", lambda: sweep.job_of(0), 120, sweep)
    until("trial 0 at epoch 3", lambda: "epoch 3/" in job_log(tmp_path, job), 120, sweep)
    # The node dies as in a power cut: slurmd and everything its job steps run, SIGKILLed at once; its
    # trial's MLflow run is left RUNNING, with nobody to close it.
    stepds = slurm_cluster._stepds(slurm.folder)
    assert stepds
    victims = [*stepds, *descendants(stepds)]
    slurm.kill("slurmd")
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    until("Slurm requeues the job", lambda: slurm.jobs().get(job) == "PENDING", 120, sweep, every=2)
    slurm.start_slurmd()  # the node comes back; the requeued job runs there again
    code = sweep.wait(timeout=240)
    out = sweep.output
    assert code == 0, out[-5000:]
    assert f"trial 0's Slurm job {job} was requeued" in out

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "mlruns" / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    (trial,) = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert trial.state == TrialState.COMPLETE
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeplab")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    trial_runs = sorted(
        (r for r in runs if r.data.tags.get("sweeplab.kind") == "run"), key=lambda r: r.info.start_time
    )
    assert [r.info.status for r in trial_runs] == ["KILLED", "FINISHED"]
    assert "stale" in trial_runs[0].data.tags["sweeplab.reason"]
    assert trial_runs[1].data.metrics["epochs"] == EPOCHS
