"""Several workers on one study: a real PostgreSQL server and a real MLflow server on loopback (started by
``sweeps.services``), real worker processes, one of them really killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeps.launch import servers as services
from sweeps.search import coordination, locks
from sweeps.search import study as search
from sweeps.support.secrets import redact_text
from tests.conftest import ROOT, run_cli


def _postgres_installed() -> bool:
    try:
        services.pg_bin("initdb")
        return True
    except SystemExit:
        return False


POSTGRES = _postgres_installed()


@pytest.fixture(scope="module", autouse=True)
def _postgres() -> None:
    """Skipped without PostgreSQL's server programs, except under CI (env ``CI`` set), where they fail:
    .ci/run installs them, so their absence there is a broken CI, not a reason to test less."""
    if not POSTGRES:
        message = "PostgreSQL server programs are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so these tests must run", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.State]:
    root = tmp_path_factory.mktemp("services")
    try:
        yield services.start(root, artifacts=root / "shared-artifacts")
    finally:
        services.stop(root)


_databases = iter(range(1000))


def new_database(state: services.State) -> str:
    """An empty database of its own for one test; its URL (with the password)."""
    return services.create_database(state, f"t{os.getpid()}_{next(_databases)}")


def python(code: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# A worker that opens the study the way the sweeper does, waits for the others at a barrier (a file
# appearing), then claims trials without waiting: creation and claims from 8 processes at the same instant.
RACE = """
    import sys, time
    from pathlib import Path
    from optuna.distributions import FloatDistribution
    from sweeps.search import coordination
    from sweeps.search.study import open_study
    url, go, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)  # imported: now waiting at the barrier
    while not go.exists():
        time.sleep(0.005)
    distributions = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    ref = open_study(url, "race", "max", None, None, heartbeat=(1, 30))
    claimed = 0
    while coordination.next_trial(ref, distributions, n, wait=False) is not None:
        claimed += 1
    print("claimed", claimed, flush=True)
    while not Path(str(go) + ".end").exists():  # exiting would leave our trials to be failed as stale
        time.sleep(0.05)
"""


@pytest.mark.timeout(420)  # the 8 start-ups (up to 240 s when loaded) + communicate's 120, + 60
def test_eight_workers_at_once_on_an_empty_database_create_one_study_and_claim_exactly_n(
    state: services.State, tmp_path: Path
):
    url = new_database(state)
    go = tmp_path / "go"
    procs = [python(RACE, url, str(go), "5") for _ in range(8)]
    for proc in procs:  # the event, not a guess at start-up time: every worker waits at the barrier
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-3000:]
    go.touch()
    claims = [int(p.stdout.readline().split()[-1]) for p in procs]
    Path(f"{go}.end").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "Error" not in err, err[-3000:]
    assert sum(claims) == 5  # no overshoot of the study total
    storage = search_storage(url)
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.study_name == "race" and summary.n_trials == 5


def search_storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(locks.driver_url(url))


# Claims one trial and keeps its heartbeat going until killed.
HELD_GRACE = 12
HOLDER = """
    import sys, time
    from optuna.distributions import FloatDistribution
    from sweeps.search import coordination
    from sweeps.search.study import open_study
    url = sys.argv[1]
    ref = open_study(url, "held", "max", None, None, heartbeat=(1, int(sys.argv[2])))
    trial = coordination.next_trial(ref, {"x": FloatDistribution(0, 1)}, 10)
    print("holding", trial.number, flush=True)
    time.sleep(600)
"""


def test_a_live_trial_on_another_host_is_kept_and_a_dead_one_is_failed_and_queued_again(
    state: services.State,
):
    url = new_database(state)
    # A beat a second, stale after HELD_GRACE seconds: a loaded machine may delay a beat by seconds, not by
    # twelve of them, so only a dead holder goes stale.
    holder = python(HOLDER, url, str(HELD_GRACE), env={"SWEEPLAB_HOST": "another-machine"})
    try:
        assert holder.stdout.readline().startswith("holding"), holder.stderr.read()[-3000:]
        claimed = time.monotonic()
        ref = search.open_study(url, "held", "max", None, None, heartbeat=(1, HELD_GRACE))
        study = ref.study
        time.sleep(max(0.0, claimed + HELD_GRACE + 2 - time.monotonic()))  # the claim is older than the grace
        assert coordination.recover_stale(ref) == []  # kept: its heartbeat is not
        assert len(study.get_trials(states=(TrialState.RUNNING,))) == 1
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        deadline = time.monotonic() + HELD_GRACE + 60
        failed: list[int] = []
        while not failed and time.monotonic() < deadline:
            time.sleep(1)
            failed = coordination.recover_stale(ref)
        assert failed == [0]
        (dead,) = study.get_trials(states=(TrialState.FAIL,))
        (queued,) = study.get_trials(states=(TrialState.WAITING,))
        assert queued.params == dead.params  # Optuna's retry: what the next ask() gets
        assert queued.user_attrs["sweeplab.retry_of"] == 0
    finally:
        holder.kill()
        holder.wait()


WORKER_ARGS = [
    "-m",
    "lr=tag(log, interval(1e-3, 1e-1))",
    "hydra.sweeper.n_trials=18",
    "hydra.sweeper.study_name=shared18",
    "hydra/sweeper/pruner=none",
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=6",
    "trainer.max_epochs=30",
    "trainer.num_threads=1",
    "checkpoint=false",
    "early_stopping_patience=0",
    "tracking=server",
]


@pytest.mark.timeout(900)  # 240 + 2 workers x 300, + 60
def test_three_workers_one_killed_share_an_18_trial_study_and_one_parent_run(
    state: services.State, tmp_path: Path
):
    url = new_database(state)
    args = [*WORKER_ARGS, f"hydra.sweeper.storage={url}", f"tracking.uri={state.tracking_uri}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    workers = []
    for i in range(3):
        folder = tmp_path / f"worker{i}"
        folder.mkdir()
        # Worker 0 plays a machine of its own: only its missing heartbeat can tell the others it died.
        extra = {"SWEEPLAB_HOST": "machine-0"} if i == 0 else {}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "sweeps.run", *args],
                cwd=folder,
                env={**env, **extra},
                stdout=(folder / "out.txt").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    storage = search.storage(url)
    victim = workers[0].pid
    deadline = time.monotonic() + 240
    killed_trial = None
    while killed_trial is None and time.monotonic() < deadline:
        time.sleep(0.25)
        try:
            study = optuna.load_study(study_name="shared18", storage=storage)
        except KeyError:
            continue
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        mine = [
            t
            for t in trials
            if t.state == TrialState.RUNNING and t.user_attrs.get("sweeplab.owner", {}).get("pid") == victim
        ]
        # Mid-trial: an epoch reported, most still to come. Near its end the kill could land between the
        # MLflow run's FINISHED and Optuna's tell, which leaves a FINISHED run for a failed trial (README).
        # Early in it (training got faster: at 15 of 30 epochs the read above could already be stale).
        if done >= 2 and mine and 1 <= len(mine[0].intermediate_values) <= 6:
            os.killpg(victim, signal.SIGKILL)  # the sweeper and its tracking process: a machine gone
            killed_trial = mine[0].number
        elif done >= 18:
            break
    assert killed_trial is not None, "worker 0 was never seen mid-trial"
    for proc in workers[1:]:
        proc.wait(timeout=300)
    outputs = [(tmp_path / f"worker{i}" / "out.txt").read_text() for i in range(3)]
    for proc, out in zip(workers[1:], outputs[1:], strict=True):
        assert proc.returncode == 0, out[-3000:]

    study = optuna.load_study(study_name="shared18", storage=storage)
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 18
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = next(t for t in trials if t.number == killed_trial)
    assert dead.state == TrialState.FAIL
    assert any(t.user_attrs.get("sweeplab.retry_of") == killed_trial for t in trials)

    client = MlflowClient(state.tracking_uri)
    experiment = client.get_experiment_by_name("sweeplab")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("sweeplab.study") == "shared18"]
    children = [r for r in children if "sweeplab.trial" in r.data.tags]
    per_trial = Counter(r.data.tags["sweeplab.trial"] for r in children)
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            assert per_trial[str(trial.number)] == 1, trial.number
    finished = {r.data.tags["sweeplab.trial"] for r in children if r.info.status == "FINISHED"}
    assert finished == {str(t.number) for t in trials if t.state == TrialState.COMPLETE}
    # README: the killed trial's run is closed as KILLED (it reported an epoch, so its run exists).
    assert [r.info.status for r in children if r.data.tags["sweeplab.trial"] == str(killed_trial)] == [
        "KILLED"
    ]
    parents = {r.data.tags.get("mlflow.parentRunId") for r in children}
    assert len(parents) == 1
    (parent,) = [r for r in runs if r.info.run_id in parents]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweeplab.shared"] == "true"
    assert parent.data.metrics["runs_finished"] == 18
    # README: the last worker out writes the whole study's leaderboard, best.yaml and Optuna's pictures.
    shown = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "leaderboard.csv", "optuna"} <= shown, shown
    pictures = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert "optimization_history.png" in pictures and "intermediate_values.png" in pictures, pictures
    board = Path(client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path)))
    assert sum("FINISHED" in line.split(",") for line in board.read_text().splitlines()[1:]) == 18

    # The database password reaches neither the console nor the store.
    for out in outputs:
        assert state.password not in out
    for run in runs:
        values = [*run.data.tags.values(), *run.data.params.values()]
        assert not [v for v in values if state.password in v]


@pytest.mark.timeout(540)  # two run_cli 240, + 60
def test_services_cli_prints_no_password(state: services.State):
    status = run_cli(["status", "--root", str(state.root)], ROOT, module="sweeps.services")
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "running" in out and state.password not in out and "***" in out
    url = run_cli(["url", "--root", str(state.root)], ROOT, module="sweeps.services")
    assert url.returncode == 0, url.stderr
    assert url.stdout.strip() == state.storage


@pytest.mark.timeout(420)  # run_cli 240 + optuna's 120, + 60
def test_the_printed_url_opens_in_optunas_own_cli(state: services.State):
    """``postgresql://`` is psycopg 3 for SQLAlchemy 2.1: the URL sweeplab prints must be what is installed,
    so that Optuna's CLI (and optuna-dashboard, the same SQLAlchemy storage) opens it."""
    printed = run_cli(["url", "--root", str(state.root)], ROOT, module="sweeps.services")
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith("postgresql://")
    ref = search.open_study(url, "printed-url", "max", None, None, heartbeat=(5, 20))
    ref.study.tell(ref.study.ask(), 0.5)
    found = {}
    for command in (["studies"], ["trials", "--study-name", "printed-url"]):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "optuna"), *command, "--storage", url, "-f", "json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, redact_text(done.stderr)
        assert state.password not in done.stdout + done.stderr
        found[command[0]] = json.loads(done.stdout)
    assert "printed-url" in [row["name"] for row in found["studies"]]
    assert [row["value"] for row in found["trials"]] == [0.5]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("hydra.sweeper.heartbeat_interval=0", "hydra.sweeper.heartbeat_interval=0 must be"),
        ("hydra.sweeper.grace_period=5", "hydra.sweeper.grace_period=5 must be longer"),
    ],
)
def test_bad_heartbeat_settings_fail_with_one_line(workdir: Path, setting: str, message: str):
    args = ["-m", "lr=interval(0.001,0.1)", f"hydra.sweeper.storage=sqlite:///{workdir}/s.db", setting]
    proc = run_cli(args, cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not list(workdir.glob("mlruns/multirun"))
