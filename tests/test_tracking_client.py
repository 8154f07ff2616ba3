"""The typed tracking client: what each method puts on the pipe, the allow-list at both ends of it, and which
error a failure is (a store that cannot be opened is bad input; the tracking process dying, or the store
refusing a request later, is a failure at run time)."""

from __future__ import annotations

import errno
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from omegaconf import OmegaConf

from sweeps.support.errors import ConfigError, TrackingError
from sweeps.support.processes import spawn
from sweeps.tracking import session as tracking
from sweeps.tracking.requests import ANSWERED, FIRE_AND_FORGET, REQUESTS
from sweeps.tracking.store import Store


class Pipe:
    """The session's end of the pipe: keeps what is sent, answers from a list (EOFError once it is empty,
    as when the tracking process is gone); ``broken`` makes sending fail as a dead process's pipe does."""

    def __init__(self, answers: list[tuple[str, Any]]) -> None:
        self.sent: list[tuple[str, dict[str, Any], bool]] = []
        self.answers = answers
        self.broken = False

    def send(self, message: tuple[str, dict[str, Any], bool]) -> None:
        if self.broken:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        self.sent.append(message)

    def recv(self) -> tuple[str, Any]:
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)

    def close(self) -> None:
        pass


class Gone:
    """The tracking process, already ended."""

    pid = 0

    def terminate(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *answers: tuple[str, Any]) -> tracking.Session:
    """A session whose tracking process is a fake pipe answering ``answers`` in turn."""
    pipe = Pipe(list(answers))
    monkeypatch.setattr(tracking, "spawn", lambda module: (Gone(), pipe))
    cfg = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": None, "experiment": "e"}
    return tracking.Session(OmegaConf.create({**cfg, "log_checkpoint": False}))


OPENED = ("ok", {"experiment_id": "1", "reaped": []})


def test_every_request_is_a_store_method_and_every_store_request_has_a_typed_method():
    store = {name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")}
    assert REQUESTS <= store
    assert not FIRE_AND_FORGET & ANSWERED
    internal = {"open", "start_run", "resolve"}  # Session's constructor, new_run and run_ids send these
    assert REQUESTS - internal <= set(dir(tracking.Session))


def test_typed_methods_put_their_request_and_arguments_on_the_pipe(monkeypatch, tmp_path):
    session = client(monkeypatch, tmp_path, OPENED)
    session.log("run1", metrics={"val_acc": 0.5}, step=3)
    session.text("run1", "a: 1\n", "config.yaml")
    session.artifact("run1", "/tmp/best.ckpt", folder="checkpoints")
    session.end_run("run1", "FINISHED")
    session.kill_trial_runs("study", ["4", "7"])
    pipe = session.conn
    assert pipe.sent[0][0] == "open" and pipe.sent[0][2] is True
    assert pipe.sent[1:] == [
        ("log", {"run": "run1", "params": None, "metrics": {"val_acc": 0.5}, "tags": None, "step": 3}, False),
        ("text", {"run": "run1", "text": "a: 1\n", "name": "config.yaml"}, False),
        ("artifact", {"run": "run1", "path": "/tmp/best.ckpt", "folder": "checkpoints"}, False),
        ("end_run", {"run": "run1", "status": "FINISHED"}, False),
        ("kill_trial_runs", {"study": "study", "trials": ["4", "7"]}, False),
    ]


def test_answered_requests_wait_for_the_store_open_first(monkeypatch, tmp_path):
    session = client(monkeypatch, tmp_path, OPENED, ("ok", "3"), ("ok", None))
    assert session.register("run-id", "digits", {"t": "v"}) == "3"
    assert session.source_run("nope", str(tmp_path)) is None
    pipe = session.conn
    assert [(name, reply) for name, _, reply in pipe.sent] == [
        ("open", True),
        ("register", True),
        ("source_run", True),
    ]


def test_a_store_that_cannot_be_opened_is_bad_input(monkeypatch, tmp_path):
    session = client(monkeypatch, tmp_path, ("error", "DatabaseError: file is not a database"))
    with pytest.raises(ConfigError, match="not a database") as raised:
        session.ready()
    assert not isinstance(raised.value, TrackingError) and raised.value.exit_code == 2


def test_a_store_refusing_a_request_at_run_time_is_a_tracking_error(monkeypatch, tmp_path):
    session = client(monkeypatch, tmp_path, OPENED, ("error", "MlflowException: registry refused"))
    with pytest.raises(TrackingError, match="registry refused") as raised:
        session.register("run-id", "digits", {})
    assert not isinstance(raised.value, ConfigError) and raised.value.exit_code == 1


def test_a_tracking_process_that_died_is_a_tracking_error_and_close_still_returns(monkeypatch, tmp_path):
    session = client(monkeypatch, tmp_path)  # no answer at all: the process is gone
    with pytest.raises(TrackingError, match="the tracking process stopped"):
        session.ready()
    pipe = session.conn
    pipe.broken = True
    with pytest.raises(TrackingError, match="the tracking process stopped") as raised:
        session.log("run1", tags={"a": "b"})
    assert isinstance(raised.value.__cause__, BrokenPipeError)
    assert session.close() is None


@pytest.mark.slow  # starts the tracking process (which imports MLflow)
def test_the_tracking_process_answers_a_name_outside_the_allow_list_with_an_error():
    process, conn = spawn("sweeps.tracking.server")
    try:
        conn.send(("abandon", {}, True))  # a Store method, but no request: it would end every open run
        status, message = conn.recv()
        assert status == "error" and message.startswith("ValueError: no such tracking request: 'abandon'")
        conn.send(("close", {}, True))
        assert conn.recv() == ("ok", None)
    finally:
        process.terminate()
        process.wait(timeout=30)
        conn.close()


def test_a_sweep_whose_tracking_process_died_says_one_line_and_exits_1(monkeypatch, capsys):
    from sweeps.sweeper import entry

    def dies(base: Any, arguments: list[str]) -> None:
        raise TrackingError("tracking.uri=sqlite:///mlruns/mlflow.db: the tracking process stopped")

    monkeypatch.setattr(entry, "run_grid", dies)
    base: Any = SimpleNamespace(settings=SimpleNamespace(params=None, storage_url="sqlite:///x/optuna.db"))
    with pytest.raises(SystemExit) as stopped:
        entry.sweep(base, ["-m", "lr=1e-3,1e-2"])
    assert stopped.value.code == 1
    assert capsys.readouterr().err == (
        "error: tracking.uri=sqlite:///mlruns/mlflow.db: the tracking process stopped\n"
    )


def test_a_tracking_process_that_went_down_with_a_full_disk_is_said_as_the_full_disk(monkeypatch, capsys):
    from sweeps.sweeper import entry

    def full(base: Any, arguments: list[str]) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "mlruns/optuna.journal")
        except OSError:
            raise TrackingError("tracking.uri=sqlite:///mlruns/mlflow.db: the tracking process stopped")  # noqa: B904

    monkeypatch.setattr(entry, "run_grid", full)
    base: Any = SimpleNamespace(settings=SimpleNamespace(params=None, storage_url="sqlite:///x/optuna.db"))
    with pytest.raises(SystemExit) as stopped:
        entry.sweep(base, ["-m", "lr=1e-3,1e-2"])
    assert stopped.value.code == 1
    assert capsys.readouterr().err.startswith("error: No space left on device (mlruns/optuna.journal)")


@pytest.mark.parametrize("mode", ["RUN", "MULTIRUN"])
def test_a_single_run_says_a_tracking_error_in_one_line_and_a_sweep_job_raises_it(monkeypatch, capsys, mode):
    from hydra.types import RunMode

    import sweeps.run

    def dies(cfg: Any) -> None:
        raise TrackingError("tracking.uri=sqlite:///mlruns/mlflow.db: the tracking process stopped")

    monkeypatch.setattr(sweeps.run, "task", dies)
    hydra = SimpleNamespace(get=lambda: SimpleNamespace(mode=RunMode[mode]))
    monkeypatch.setattr(sweeps.run, "HydraConfig", hydra)
    if mode == "MULTIRUN":  # the job's run is FAILED with the reason; the sweep goes on
        with pytest.raises(TrackingError):
            sweeps.run.main.__wrapped__(OmegaConf.create({}))
        return
    with pytest.raises(SystemExit) as stopped:
        sweeps.run.main.__wrapped__(OmegaConf.create({}))
    assert stopped.value.code == 1
    assert capsys.readouterr().err == (
        "error: tracking.uri=sqlite:///mlruns/mlflow.db: the tracking process stopped\n"
    )
