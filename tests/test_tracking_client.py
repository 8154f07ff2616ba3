"""The typed tracking client against a real tracking process and a real SQLite store in a temporary folder
(one for the module): what each method writes, read back with MLflow's own client; the allow-list at both
ends of the pipe; which error a failure is (a store that cannot be opened is bad input; the tracking process
dying, or the store refusing a request later, is a failure at run time); and the one line that a single run
and a sweep say when their tracking process dies (a real one, killed with SIGKILL)."""

from __future__ import annotations

import errno
import inspect
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweeps.outcome import Outcome, State
from sweeps.support.errors import ConfigError, TrackingError
from sweeps.support.processes import spawn
from sweeps.tracking import session as tracking
from sweeps.tracking.requests import ANSWERED, FIRE_AND_FORGET, REQUESTS, refused
from sweeps.tracking.store import Store
from tests.conftest import ONE_BATCH, compose_cfg

STOPPED = "the tracking process stopped"


@dataclass
class Tracked:
    """The module's tracking session, its settings, and MLflow's client on the same store."""

    session: tracking.Session
    settings: DictConfig
    client: MlflowClient
    uri: str
    experiment_id: str


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    folder = tmp_path_factory.mktemp("client")
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"  # the default layout, under a folder of its own
    cfg = compose_cfg([f"tracking.uri={uri}", f"tracking.artifacts={folder / 'mlruns' / 'artifacts'}"])
    with pytest.MonkeyPatch.context() as here:
        here.chdir(folder)  # the tracking process's folder: whatever it writes there stays in the test's
        session = tracking.start(cfg.tracking)
    assert session is not None
    try:
        opened = session.ready()
        yield Tracked(session, cfg.tracking, MlflowClient(uri), uri, opened["experiment_id"])
    finally:
        session.close()


def started(settings: DictConfig, **changes: Any) -> tracking.Session:
    """Another tracking session (its own process), on the module's store unless ``changes`` say otherwise."""
    session = tracking.start(OmegaConf.merge(settings, changes))
    assert session is not None
    return session


def kill(session: tracking.Session) -> None:
    """The session's tracking process, killed as the OOM killer would (no chance to close anything)."""
    session.process.send_signal(signal.SIGKILL)
    assert session.process.wait(timeout=30) == -signal.SIGKILL


def run_of(tracked: Tracked, name: str, tags: dict[str, str] | None = None) -> tuple[str, str]:
    """A new run: our handle for it and its MLflow run id."""
    handle = tracked.session.new_run(name, tags or {})
    return handle, tracked.session.run_ids([handle])[handle]


# -- the allow-list ---


def test_every_request_is_a_store_method_and_every_store_request_has_a_typed_method():
    store = {name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")}
    assert REQUESTS <= store
    assert not FIRE_AND_FORGET & ANSWERED
    internal = {"open", "start_run", "resolve"}  # Session's constructor, new_run and run_ids send these
    assert REQUESTS - internal <= set(dir(tracking.Session))
    # Each typed method sends its own name, unanswered if fire-and-forget, answered otherwise.
    for name in REQUESTS - internal:
        sent = re.findall(r'self\._(send|call)\("(\w+)"', inspect.getsource(getattr(tracking.Session, name)))
        assert sent == [("send" if name in FIRE_AND_FORGET else "call", name)], name


def test_the_tracking_process_refuses_a_name_outside_the_allow_list_and_calls_nothing(tracked, capfd):
    process, conn = spawn("sweeps.tracking.server")
    try:
        opened = {"uri": tracked.uri, "experiment": "allow-list", "artifact_root": None, "check_url": None}
        conn.send(("open", opened, True))
        assert conn.recv()[0] == "ok"
        conn.send(("start_run", {"handle": "run1", "name": "open run", "tags": {}}, False))
        # Store methods, but no requests: ``abandon`` would end every open run KILLED, ``__init__`` would
        # forget the runs' handles.
        for name in ("abandon", "__init__"):
            conn.send((name, {}, True))
            assert conn.recv() == ("error", f"ValueError: {refused(name)}")
        conn.send(("abandon", {}, False))  # not answered: said on stderr
        conn.send(("resolve", {"handles": ["run1"]}, True))
        status, ids = conn.recv()
        assert status == "ok" and list(ids) == ["run1"]  # the handles are all there
        assert tracked.client.get_run(ids["run1"]).info.status == "RUNNING"  # and the run still open
        conn.send(("close", {}, True))
        assert conn.recv() == ("ok", None)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        conn.close()
    assert f"tracking: ValueError: {refused('abandon')}" in capfd.readouterr().err.splitlines()
    tracked.client.set_terminated(ids["run1"], "KILLED")


# -- what each typed method writes ---


def test_the_fire_and_forget_methods_land_in_the_store(tracked, tmp_path):
    session, client = tracked.session, tracked.client
    handle, run_id = run_of(tracked, "typed", {"sweeplab.kind": "run"})
    session.log(handle, params={"lr": "0.01"}, tags={"sweeplab.note": "typed"})
    session.log(handle, metrics={"val_acc": 0.5}, step=1)
    session.log(handle, metrics={"val_acc": 0.75, "val_loss": 0.25}, step=2)
    session.text(handle, "lr: 0.01\n", "config.yaml")
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"weights")
    session.artifact(handle, str(checkpoint), folder="checkpoints")
    session.artifact(handle, str(tmp_path / "gone.ckpt"))  # gone by then: skipped, no error
    arrays = [((12, 64), "float32"), ((12,), "int64")]
    data = {
        "name": "digits",
        "source": "sklearn.datasets.load_digits",
        "digest": "0123abcd",
        "arrays": arrays,
    }
    session.datasets(handle, [{**data, "context": "training"}])
    rows = [{"objective": 0.75, "overrides": {"loss": "mse", "optimizer": "adam", "lr": "0.01"}}]
    session.heatmap(handle, rows, "val_acc", "max")
    session.end_run(handle, "FINISHED")
    session.sync()

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "typed"
    assert run.data.params["lr"] == "0.01"
    assert run.data.tags["sweeplab.note"] == "typed" and run.data.tags["sweeplab.kind"] == "run"
    history = client.get_metric_history(run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert run.data.metrics["val_loss"] == 0.25
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "checkpoints",
        "config.yaml",
        "heatmap.png",
    ]
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    assert Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text() == "lr: 0.01\n"
    [dataset] = run.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.dataset.digest) == ("digits", "0123abcd")
    assert [(t.key, t.value) for t in dataset.tags] == [("mlflow.data.context", "training")]


def test_a_one_parameter_search_gets_the_pictures_that_say_something(tracked, tmp_path):
    """History and intermediate values; no importances (the one parameter is all of it, and fANOVA's forest
    cost 0.5-3 s of the command's end) and no contour (it needs two parameters)."""
    import optuna

    from sweeps.search.study import storage

    journal = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="one-param", storage=storage(journal), direction="maximize")
    tracked.session.warm_pictures(journal)  # as a search does: before its trials
    for lr in (1e-3, 1e-2, 1e-1):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        trial.report(lr, step=1)
        study.tell(trial, lr)
    handle, run_id = run_of(tracked, "one-param")
    tracked.session.optuna_plots(handle, journal, "one-param", ["lr"])
    tracked.session.sync()
    pictures = sorted(a.path for a in tracked.client.list_artifacts(run_id, "optuna"))
    assert pictures == ["optuna/intermediate_values.png", "optuna/optimization_history.png"]


DRAWING = """
import os, signal, sys
from pathlib import Path

import optuna
from optuna.visualization import matplotlib as plots

from sweeps.tracking import optuna_pictures

folder = Path(sys.argv[1])
study = optuna.create_study(direction="maximize")
for lr in (1e-3, 1e-2, 1e-1):
    study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}), lr)


def dies(study):
    os.kill(os.getpid(), signal.SIGKILL)


def history(study):
    (folder / "drawn_by").write_text(str(os.getpid()))
    return plots.plot_optimization_history(study)


optuna_pictures._figures = lambda params: {"dies.png": dies, "history.png": history}
drawn = optuna_pictures.start(study, ["lr"], folder).files()
print(os.getpid(), *[path.name for path in drawn])
"""


def test_each_picture_draws_in_a_process_of_its_own_and_one_whose_process_died_costs_a_line(tmp_path):
    """The tracking process forks one process per picture (they draw side by side while it goes on with its
    requests); a picture whose process died is said in one line, and the others are drawn all the same. (In
    a process of its own, as the tracking process: this one runs threads, and then the pictures draw here.)"""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", DRAWING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    pid, *drawn = done.stdout.split()
    assert drawn == ["history.png"]
    assert (tmp_path / "drawn_by").read_text() != pid  # drawn by another process
    assert "tracking: no dies.png: its drawing process ended with -9\n" in done.stderr


def test_the_tracking_process_is_niced_unless_a_sweeps_trial_workers_write_through_it(tracked):
    """Training comes first where the two share a core; the workers' tracking process keeps up with them."""
    for serves_workers, niceness in ((False, 5), (True, 0)):
        session = tracking.start(tracked.settings, serves_workers=serves_workers)
        assert session is not None and session.process is not None
        try:
            session.ready()  # (it nices itself before it answers anything)
            ours = os.getpriority(os.PRIO_PROCESS, 0)
            assert os.getpriority(os.PRIO_PROCESS, session.process.pid) == min(19, ours + niceness)
        finally:
            session.close()


def test_the_journal_opened_while_a_search_trains_is_read_up_to_date_for_its_pictures(tmp_path):
    """``warm_pictures`` opens the study's journal early (Optuna then reads only what came since); the trials
    told after it, by the sweep's own storage, are all in the study the pictures are drawn from."""
    import optuna

    from sweeps.search.study import storage
    from sweeps.tracking.store import Store

    journal = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="later", storage=storage(journal), direction="maximize")
    store = Store()
    store.open(f"sqlite:///{tmp_path / 'mlflow.db'}", "later", None, None)
    store.warm_pictures(journal)
    assert store._journal is not None and store._journal[0] == journal
    assert store.study(journal, "later").trials == []
    for lr in (1e-3, 1e-2, 1e-1):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        study.tell(trial, lr)
    assert [t.value for t in store.study(journal, "later").trials] == [1e-3, 1e-2, 1e-1]


WARMING = """
import sys
from sweeps.tracking.store import Store

store = Store()
store.open("sqlite:///" + sys.argv[1], "warming", None, None)
store.warm_pictures()
run = store.start_run("run-1", "a run", {"sweeplab.kind": "sweep"})
print(store._warming.is_alive(), bool(run))
store._warming.join()
print("matplotlib.pyplot" in sys.modules)
"""


def test_the_pictures_warm_up_beside_the_requests_not_before_them(tmp_path):
    """The first request after ``warm_pictures`` (the sweep's parent run, which the sweep waits for) is
    answered while the drawing libraries still load (0.6 s of a fresh process), not after."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WARMING, str(tmp_path / "mlflow.db")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.split() == ["True", "True", "True"], done.stderr[-2000:]


def test_trial_runs_names_each_trials_latest_run_of_the_study_and_not_a_repeats_seeds(tracked):
    """What a resumed study's leaderboard names for the trials of its earlier commands."""

    def run(trial: str, study: str = "trials-of-s", kind: str = "run") -> str:
        tags = {"sweeplab.study": study, "sweeplab.trial": trial, "sweeplab.kind": kind}
        handle = tracked.session.new_run(f"trial {trial}", tags)
        time.sleep(0.01)  # (MLflow's start times are in milliseconds)
        return tracked.session.run_ids([handle])[handle]

    run("0")
    again, one = run("0"), run("1")  # trial 0 recorded twice (a requeued job's second run)
    run("1", kind="seed")
    run("0", study="another study")
    assert tracked.session.trial_runs("trials-of-s") == {"0": again, "1": one}
    assert tracked.session.trial_runs('it\'s "quoted"') == {}


def test_kill_trial_runs_ends_the_running_runs_of_those_trials_killed(tracked):
    session, client = tracked.session, tracked.client
    study = "client-kill"
    runs = {
        trial: session.new_run(f"trial {trial}", {"sweeplab.study": study, "sweeplab.trial": trial})
        for trial in ("4", "7", "9")
    }
    runs["other"] = session.new_run("other study", {"sweeplab.study": "client-other", "sweeplab.trial": "4"})
    runs["done"] = session.new_run("finished", {"sweeplab.study": study, "sweeplab.trial": "7"})
    session.end_run(runs["done"], "FINISHED")
    session.kill_trial_runs(study, ["4", "7"])
    ids = session.run_ids(list(runs.values()))  # waits for the writes queued so far
    found = {key: client.get_run(ids[handle]) for key, handle in runs.items()}
    assert {key: run.info.status for key, run in found.items()} == {
        "4": "KILLED",
        "7": "KILLED",
        "9": "RUNNING",  # another trial
        "other": "RUNNING",  # the same trial number in another study
        "done": "FINISHED",  # no longer running
    }
    for trial in ("4", "7"):
        tags = found[trial].data.tags
        assert (tags["sweeplab.state"], tags["sweeplab.reason"]) == (
            "KILLED",
            "its worker stopped (stale trial)",
        )
    for key in ("9", "other"):
        session.end_run(runs[key], "FINISHED")


def attached_session(tracked: Tracked) -> tracking.Session:
    """A trial worker's session: a socket that the module's tracking process was handed (``attach``)."""
    mine, theirs = socket.socketpair()
    tracked.session.attach(mine)
    mine.close()
    session = tracking.start(tracked.settings, attached=Connection(theirs.detach()))
    assert session is not None and session.process is None
    return session


def test_workers_write_through_the_sweeps_tracking_process_and_a_dead_ones_open_run_is_killed(tracked):
    session, client = tracked.session, tracked.client
    done, dying = attached_session(tracked), attached_session(tracked)
    finished = done.new_run("attached, finished", {})
    done.log(finished, params={"lr": "0.1"}, metrics={"val_acc": 0.5}, step=1)
    done.end_run(finished, "FINISHED")
    left_open = dying.new_run("attached, its worker dies", {})
    ids = {**done.run_ids([finished]), **dying.run_ids([left_open])}
    assert len({finished, left_open, session.new_run("the sweep's own", {})}) == 3  # no handle shared
    assert done.close() is None  # detached: every write of its done, the process goes on
    dying.conn.close()  # as the socket of a worker killed by SIGKILL closes
    session.sync()
    run = client.get_run(ids[finished])
    assert (run.info.status, run.data.params["lr"], run.data.metrics["val_acc"]) == ("FINISHED", "0.1", 0.5)
    run = client.get_run(ids[left_open])
    assert (run.info.status, run.data.tags["sweeplab.state"]) == ("KILLED", "KILLED")
    assert "without closing the run" in run.data.tags["sweeplab.reason"]
    assert session.process is not None and session.process.poll() is None  # the sweep's process goes on
    handle, run_id = run_of(tracked, "after the workers")
    session.end_run(handle, "FINISHED")


def test_the_sweep_knows_a_workers_run_closed_once_the_worker_reported_it_without_waiting(tracked):
    """A worker sends its trial's outcome to the sweep without a round trip of its own: the sweep's
    ``run_ids`` then finds the run, with all of the worker's writes done (what came before its report)."""
    worker = attached_session(tracked)
    handle = worker.new_run("attached, not waited for", {})
    worker.log(handle, params={"lr": "0.1"}, metrics={"val_acc": 0.5}, step=1)
    worker.log(handle, params={"model.hidden": "64"}, tags={"sweeplab.state": "FINISHED"})
    worker.end_run(handle, "FINISHED")  # nothing it waits for: then it reports the handle to the sweep
    run_id = tracked.session.run_ids([handle])[handle]
    run = tracked.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "model.hidden": "64"}
    assert (run.data.metrics, run.data.tags["sweeplab.state"]) == ({"val_acc": 0.5}, "FINISHED")
    assert worker.close() is None


def test_held_writes_go_out_within_mlflows_limits_and_a_refused_param_loses_nothing_else(tracked, tmp_path):
    """A run's params, tags and metrics wait and go out together: more than one ``log_batch`` may take
    (100 params, 100 tags, 1000 entities), and a changed param, which MLflow refuses, is said without
    the metrics and tags held with it."""
    from mlflow.exceptions import MlflowException

    store = Store()
    store.open(tracked.uri, tracked.settings.experiment, None, None)
    store.start_run("run-many", "many", {})
    store.log("run-many", params={f"p{i}": i for i in range(250)}, tags={f"t{i}": "x" for i in range(150)})
    for step in range(1500):
        store.log("run-many", metrics={"loss": 1.0 / (step + 1)}, step=step)
    store.log("run-many", params={"p0": "0"}, tags={"t0": "again"})  # the same param, a tag set again
    store.flush()
    run_id = store.ids["run-many"]
    run = tracked.client.get_run(run_id)
    assert (len(run.data.params), run.data.params["p249"]) == (250, "249")
    assert (sum(k.startswith("t") for k in run.data.tags), run.data.tags["t0"]) == (150, "again")
    assert len(tracked.client.get_metric_history(run_id, "loss")) == 1500

    store.log("run-many", params={"p1": "changed"}, metrics={"late": 2.0}, tags={"late": "yes"}, step=1)
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        store.flush()
    run = tracked.client.get_run(run_id)
    assert (run.data.params["p1"], run.data.metrics["late"], run.data.tags["late"]) == ("1", 2.0, "yes")
    store.end_run("run-many", "FINISHED")


def test_source_run_returns_a_runs_params_and_its_best_checkpoint(tracked, tmp_path):
    session = tracked.session
    handle, run_id = run_of(tracked, "source")
    session.log(handle, params={"lr": "0.02", "optimizer": "sgd"})
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"the best weights")
    session.artifact(handle, str(checkpoint), folder="checkpoints")
    session.end_run(handle, "FINISHED")
    found = session.source_run(run_id, str(tmp_path / "dest"))
    assert found is not None and found["params"] == {"lr": "0.02", "optimizer": "sgd"}
    assert Path(found["checkpoint"]).read_bytes() == b"the best weights"
    assert Path(found["checkpoint"]).is_relative_to(tmp_path / "dest")
    _, bare = run_of(tracked, "no checkpoint")
    assert session.source_run(bare, str(tmp_path / "dest")) == {"params": {}, "checkpoint": None}
    assert session.source_run("0" * 32, str(tmp_path / "dest")) is None  # no such run
    session.end_run(bare, "FINISHED")


def test_register_makes_a_new_version_of_a_model_logged_by_another_process(tracked):
    session, client = tracked.session, tracked.client
    handle, run_id = run_of(tracked, "registered")
    session.end_run(handle, "FINISHED")
    # The model a job's own tracking process logged on the run (as ``model`` does, without torch here).
    client.create_logged_model(tracked.experiment_id, name="model", source_run_id=run_id)
    assert session.register(run_id, "client-digits", {"sweeplab.objective": "val_acc"}) == "1"
    assert session.register(handle, "client-digits", {}) == "2"  # our handle serves as well as the id
    version = client.get_model_version("client-digits", "1")
    assert version.run_id == run_id and version.tags == {"sweeplab.objective": "val_acc"}


# -- which error a failure is ---


def test_a_store_that_cannot_be_opened_is_bad_input(tracked, tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(bytes(range(256)) * 32)  # 8 KiB of no SQLite database
    session = started(tracked.settings, uri=f"sqlite:///{db}")
    try:
        with pytest.raises(ConfigError, match="not a database") as raised:
            session.ready()
        assert not isinstance(raised.value, TrackingError) and raised.value.exit_code == 2
        assert str(raised.value).startswith(f"tracking.uri=sqlite:///{db}: ")
    finally:
        assert session.close() is None
    assert db.read_bytes() == bytes(range(256)) * 32  # left as it was


def test_a_store_refusing_a_request_at_run_time_is_a_tracking_error(tracked):
    handle, run_id = run_of(tracked, "no model")
    with pytest.raises(TrackingError, match=f"run {run_id} logged no model") as raised:
        tracked.session.register(handle, "client-refused", {})
    assert not isinstance(raised.value, ConfigError) and raised.value.exit_code == 1
    assert str(raised.value).count("\n") == 0
    tracked.session.end_run(handle, "FINISHED")  # the session goes on
    tracked.session.sync()
    assert tracked.client.get_run(run_id).info.status == "FINISHED"


def test_a_tracking_process_that_died_is_a_tracking_error_and_close_still_returns(tracked):
    session = started(tracked.settings)
    try:
        handle = session.new_run("dies", {})
        run_id = session.run_ids([handle])[handle]
        kill(session)
        with pytest.raises(TrackingError, match=STOPPED) as raised:
            session.sync()  # the next answered request
        assert not isinstance(raised.value, ConfigError) and raised.value.exit_code == 1
        with pytest.raises(TrackingError, match=STOPPED) as raised:
            session.log(handle, tags={"sweeplab.note": "lost"})  # and any write after it
        assert isinstance(raised.value.__cause__, OSError)  # the pipe broke
    finally:
        began = time.monotonic()
        assert session.close() is None
        assert time.monotonic() - began < 5 and session.conn.closed
    # Nothing could close its run: the next command's tracking process reaps it.
    assert tracked.client.get_run(run_id).info.status == "RUNNING"
    tracked.client.set_terminated(run_id, "KILLED")


def test_a_tracking_process_that_died_before_it_answered_is_a_tracking_error_not_bad_input(tracked):
    session = started(tracked.settings)
    kill(session)  # still importing its modules: the ``open`` request lies unread
    try:
        with pytest.raises(TrackingError, match=STOPPED) as raised:
            session.ready()
        assert not isinstance(raised.value, ConfigError) and raised.value.exit_code == 1
    finally:
        assert session.close() is None


# -- what a command says when its tracking process dies ---


def test_a_single_run_whose_tracking_process_died_says_one_line_and_exits_1(
    tracked, tmp_path, monkeypatch, capsys
):
    from sweeps.launch.job import single_run

    sessions: list[tracking.Session] = []
    start = tracking.start

    def dies(settings: DictConfig) -> tracking.Session | None:  # once the store is open, while torch loads
        session = start(settings)
        assert session is not None
        session.ready()
        kill(session)
        sessions.append(session)
        return session

    monkeypatch.setattr(tracking, "start", dies)
    cfg = compose_cfg([*ONE_BATCH, f"tracking.uri={tracked.uri}"])
    hc = OmegaConf.create(
        {"runtime": {"output_dir": str(tmp_path), "choices": {}}, "overrides": {"task": []}}
    )
    with pytest.raises(SystemExit) as stopped:
        single_run(cfg, hc)
    assert stopped.value.code == 1
    where = tmp_path / "error.txt"
    assert capsys.readouterr().err.splitlines() == [
        f"error: TrackingError: tracking.uri={tracked.uri}: {STOPPED} (details in {where})"
    ]
    assert "TrackingError" in where.read_text()
    [session] = sessions
    assert session.conn.closed  # closed on the way out


class DyingSweep:
    """What ``run_grid`` asks of a sweep: its jobs, its start (a real sweep run on a real tracking session)
    and a launcher whose jobs end with the tracking process killed (and ``launched`` run as they end)."""

    def __init__(self, session: tracking.Session, folder: Path, launched: Any = None) -> None:
        self.session, self.folder, self.launched = session, folder, launched
        self.settings = SimpleNamespace(
            params=None, storage_url=f"sqlite:///{folder / 'study' / 'optuna.db'}", resume=True
        )
        self.in_process = False  # jobs run elsewhere: no grid record to resume from
        self.config = OmegaConf.create({"verbose": False})
        self.runner = SimpleNamespace(ours=True)
        self.launcher = SimpleNamespace(launch=self.launch)

    def plan(self, arguments: list[str]) -> list[list[str]]:
        return [["lr=0.001"], ["lr=0.01"]]

    def start(self, jobs: list[list[str]], **_: Any) -> tuple[tracking.Session, None, Path]:
        self.session.start_sweep("sweep client", self.folder)
        self.handles = [
            self.session.new_run(f"{i}: {' '.join(j)}", {}, self.session.parent) for i, j in enumerate(jobs)
        ]
        return self.session, None, self.folder

    def launch(self, jobs: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        kill(self.session)
        if self.launched:
            self.launched()
        outcome = Outcome(State.FINISHED, 0.5, metric="val_acc")
        return [
            JobReturn(overrides=job, status=JobStatus.COMPLETED, _return_value=outcome.replace(run_id=handle))
            for job, handle in zip(jobs, self.handles, strict=True)
        ]


def test_a_sweep_whose_tracking_process_died_says_one_line_and_exits_1(tracked, tmp_path, capsys):
    from sweeps.sweeper import entry

    session = started(tracked.settings)
    with pytest.raises(SystemExit) as stopped:
        entry.sweep(DyingSweep(session, tmp_path), ["-m", "lr=0.001,0.01"])
    assert stopped.value.code == 1
    assert capsys.readouterr().err.splitlines() == [f"error: tracking.uri={tracked.uri}: {STOPPED}"]


def test_a_tracking_process_that_went_down_with_a_full_disk_is_said_as_the_full_disk(
    tracked, tmp_path, capsys
):
    from sweeps.sweeper import entry

    def journal() -> None:  # the study's journal, written on a disk with no space left
        with open("/dev/full", "w") as full:
            full.write("trial 0 finished\n")

    session = started(tracked.settings)
    with pytest.raises(SystemExit) as stopped:
        entry.sweep(DyingSweep(session, tmp_path, journal), ["-m", "lr=0.001,0.01"])
    assert stopped.value.code == 1
    assert isinstance(stopped.value.__context__, TrackingError)  # closing the sweep's runs failed after it
    assert capsys.readouterr().err.splitlines() == [
        f"error: {os.strerror(errno.ENOSPC)} ({tmp_path / 'study'}): the sweep stopped; its finished trials "
        "and runs are kept; free some space and run the same command to resume"
    ]


def test_a_relative_sqlite_store_is_the_one_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """MLflow keeps one engine per URI: ``sqlite:///mlflow.db`` opened in a second folder of the same process
    (a command called in-process, ``python -m sweeps.compare``) must not reach the first folder's file."""
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        client = Store().connect("sqlite:///mlflow.db")
        client.create_experiment(name)
        assert (folder / "mlflow.db").is_file()
    assert client.get_experiment_by_name("first") is None


# -- a reply nobody waited for ---
def test_close_reads_its_own_reply_after_one_that_nobody_waited_for(tracked):
    """A signal that stops a command between a request and its answer (here: the store's opening, never
    waited for) leaves a reply in the pipe; ``close`` must not take it for its own (a dict read as "the
    store refused a write" made an interrupted grid say its disk was full)."""
    session = started(tracked.settings)
    assert session.close() is None
    session = started(tracked.settings)
    session.ready()
    session.new_run("unread", {})
    assert session.close() is None
    assert tracked.client.search_runs([tracked.experiment_id], "attributes.run_name = 'unread'")
