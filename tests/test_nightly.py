"""Overnight sweeps (python -m sweeps.nightly): deadline, resume, lock, morning report, cron line, webhook."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sweeps.nightly import cli as nightly
from sweeps.nightly import clock, webhook
from sweeps.nightly import report as nightly_report
from sweeps.support import renames
from sweeps.support.errors import ConfigError
from tests.conftest import CONF, ONE_BATCH, free_port, run_cli, start_cli

SHORT = ["trainer.max_epochs=3"]  # short trials: several fit in a short night


def nightly_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300):
    return run_cli(args, cwd, timeout, env, module="sweeps.nightly")


def start_nightly(args: list[str], cwd: Path) -> subprocess.Popen:
    return start_cli(args, cwd, module="sweeps.nightly")


def load_study(workdir: Path, name: str = "nightly-default") -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def mlflow_runs(workdir: Path) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeplab")
    return client.search_runs([exp.experiment_id], max_results=1000)


def report_of(proc: subprocess.CompletedProcess) -> Path:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("report: ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return Path(lines[-1].removeprefix("report: "))


def hours(seconds: float) -> str:
    return repr(seconds / 3600)


def trials_of(workdir: Path, *states: TrialState) -> list:
    """The default plan's trials in these states (none before the sweep has written its journal)."""
    if not (workdir / "mlruns" / "optuna.journal").exists():
        return []
    try:
        return load_study(workdir).get_trials(states=states)
    except KeyError:  # the journal exists, the study is not in it yet
        return []


def start_logged(args: list[str], workdir: Path) -> subprocess.Popen:
    """A night left running, its output in ``night.log`` (a pipe nobody reads could fill and block it)."""
    with (workdir / "night.log").open("w") as log:
        return start_cli(args, workdir, module="sweeps.nightly", stdout=log)


def wait_for(what: str, ready, night: subprocess.Popen, workdir: Path, timeout: float = 240) -> None:
    """Until ``ready()`` is true: an event, not a guess at how long it takes on this machine."""
    limit = time.monotonic() + timeout
    while not ready():
        if night.poll() is not None or time.monotonic() > limit:
            night.kill()
            log = (workdir / "night.log").read_text()[-3000:]
            raise AssertionError(f"{what}: not seen; the night's output:\n{log}")
        time.sleep(0.5)


def stop_night(night: subprocess.Popen, workdir: Path) -> tuple[subprocess.CompletedProcess, dt.datetime]:
    """``python -m sweeps.nightly stop default`` beside the running night; the night's end and the stop's
    time (naive local time, as Optuna's)."""
    at = dt.datetime.now()
    stop = nightly_cli(["stop", "default"], cwd=workdir, timeout=120)
    assert stop.returncode == 0 and "stop requested" in stop.stdout, stop.stdout + stop.stderr
    try:
        night.wait(timeout=240)
    except subprocess.TimeoutExpired:
        night.kill()  # its sweep dies with it (PR_SET_PDEATHSIG)
        log = (workdir / "night.log").read_text()[-3000:]
        raise AssertionError(f"the night went on after the stop:\n{log}") from None
    out = (workdir / "night.log").read_text()
    return subprocess.CompletedProcess(night.args, night.returncode, out, ""), at


@pytest.mark.timeout(720)  # 240 + stop 120 + 240, + 60 (and the checks)
def test_a_night_stopped_early_starts_nothing_after_the_stop_closes_everything_and_reports(workdir: Path):
    """The deadline rule, by events: the night runs until two trials completed, then is stopped."""
    night = start_logged(["default", "--hours", "1", *SHORT], workdir)
    two = lambda: len(trials_of(workdir, TrialState.COMPLETE)) >= 2  # noqa: E731
    wait_for("two completed trials", two, night, workdir)
    proc, stopped_at = stop_night(night, workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "search: stop requested, no new trial starts" in proc.stdout, proc.stdout[-3000:]
    report = report_of(proc)
    summary = json.loads((report.parent / "summary.json").read_text())
    until = dt.datetime.fromisoformat(summary["stopped"]).replace(tzinfo=None)
    assert stopped_at <= until < stopped_at + dt.timedelta(seconds=60)

    study = load_study(workdir)
    assert study.user_attrs["sweeplab.stop_reason"] == "stop requested"  # README: why a search stopped
    trials = study.get_trials()
    assert trials and all(t.datetime_start <= until for t in trials if t.datetime_start), "started late"
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert not [r for r in mlflow_runs(workdir) if r.info.status == "RUNNING"]

    text = report.read_text()
    assert f"stopped early at {until:%Y-%m-%d %H:%M:%S}" in text
    best = study.best_trial
    assert f"val_acc = {best.value:.4f}" in text and f"trial {best.number}" in text
    assert all(f"`{key}`" in text for key in best.params)  # the best config
    assert "First night of this plan" in text
    for state in ("completed", "pruned", "failed", "stopped at the deadline"):
        assert f"| {state}" in text
    assert "### Failure reasons (tonight)" in text
    for picture in ("optimization_history.png", "param_importances.png", "heatmap.png"):
        assert (report.parent / picture).stat().st_size > 1000
        assert f"]({picture})" in text
    assert summary["tonight"]["complete"] == len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert not (workdir / "mlruns" / "nightly" / "default" / "stop").exists()  # the next night is not stopped

    (parent,) = [r for r in mlflow_runs(workdir) if r.data.tags.get("sweeplab.kind") == "sweep"]
    assert "## Best" in parent.data.tags["mlflow.note.content"]
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    shown = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "nightly")}
    assert {"report.md", "summary.json", "optimization_history.png", "heatmap.png"} <= shown


def test_stop_without_a_running_night_is_one_line_and_writes_nothing(workdir: Path):
    proc = nightly_cli(["stop", "default"], cwd=workdir, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: plan default is not running here") and proc.stderr.count("\n") == 1
    assert not (workdir / "mlruns" / "nightly" / "default" / "stop").exists()


@pytest.mark.timeout(660)  # two nightly_cli 300, + 60
def test_next_night_resumes_the_study_and_says_what_changed(workdir: Path):
    first = nightly_cli(["default", "--hours", "1", "hydra.sweeper.n_trials=2", *SHORT], cwd=workdir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = nightly_cli(["default", "--hours", "1", "hydra.sweeper.n_trials=3", *SHORT], cwd=workdir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "2 of 3 trials finished before" in second.stdout + second.stderr

    study = load_study(workdir)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3
    report_1, report_2 = report_of(first), report_of(second)
    assert report_1.parent != report_2.parent
    summary = json.loads((report_2.parent / "summary.json").read_text())
    changes = summary["changes"]
    assert changes["previous"] == report_1.parent.name and changes["same_study"]
    assert changes["trials_added"] == 1
    text = report_2.read_text()
    assert f"compared with {report_1.parent.name}, the same study" in text
    assert "trials added: 1" in text
    assert ("**new best**" in text) == changes["new_best"]
    assert ("no new best" in text) != changes["new_best"]  # one or the other, whichever the night gave
    history = (workdir / "mlruns" / "nightly" / "default" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2


@pytest.mark.timeout(660)  # 180 + 60 + 30 + 30 + nightly_cli 300, + 60
def test_second_copy_is_refused_and_a_killed_holder_is_taken_over(workdir: Path):
    long_trials = ["trainer.max_epochs=2000", "hydra/sweeper/pruner=none"]
    first = start_nightly(["default", "--hours", "1", *long_trials], cwd=workdir)
    journal = workdir / "mlruns" / "optuna.journal"
    limit = time.monotonic() + 180
    running: list = []
    while not running and time.monotonic() < limit:
        time.sleep(0.5)
        if journal.exists():  # (a trial is RUNNING a moment before its owner is written on it)
            trials = load_study(workdir).get_trials(states=(TrialState.RUNNING,))
            running = [t for t in trials if "sweeplab.owner" in t.user_attrs]
    assert running, "the first copy started no trial"

    began = time.monotonic()
    second = nightly_cli(["default", "--hours", "1"], cwd=workdir, timeout=60)
    assert second.returncode == nightly.EXIT_BUSY
    assert time.monotonic() - began < 30  # at once: nothing composed, nothing trained
    assert f"plan default is already running (pid {first.pid} on" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1

    first.kill()  # SIGKILL: the lock file keeps its details, the kernel lock goes
    first.wait(timeout=30)
    sweep_pid = int(running[0].user_attrs["sweeplab.owner"]["pid"])  # the sweep process dies with nightly
    limit = time.monotonic() + 30
    while Path(f"/proc/{sweep_pid}").exists() and time.monotonic() < limit:
        time.sleep(0.2)

    third = nightly_cli(["default", "--hours", "1", "hydra.sweeper.n_trials=1", *SHORT], cwd=workdir)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert f"took over the lock of pid {first.pid}" in third.stdout
    study = load_study(workdir)
    killed = study.trials[running[0].number]
    assert killed.state == TrialState.FAIL
    (again,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert again.params == killed.params  # the killed trial ran again
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert not [r for r in mlflow_runs(workdir) if r.info.status == "RUNNING"]
    assert (workdir / "mlruns" / "nightly" / "default" / "lock").read_text() == ""  # released


@pytest.mark.timeout(720)  # 240 + stop 120 + 240, + 60 (and the checks)
def test_trial_still_training_at_the_deadline_is_stopped_cleanly(workdir: Path):
    """The deadline comes (a stop moves it to now) while a trial trains: seen training, then stopped."""
    long_trials = ["trainer.max_epochs=20000", "hydra/sweeper/pruner=none"]
    night = start_logged(["default", "--hours", "1", *long_trials], workdir)
    training = lambda: any(t.intermediate_values for t in trials_of(workdir, TrialState.RUNNING))  # noqa: E731
    wait_for("a trial that has trained an epoch", training, night, workdir)
    proc, _ = stop_night(night, workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = json.loads((report_of(proc).parent / "summary.json").read_text())
    until = dt.datetime.fromisoformat(summary["stopped"]).replace(tzinfo=None)
    study = load_study(workdir)
    (stopped,) = study.get_trials(states=(TrialState.FAIL,))
    assert stopped.user_attrs["sweeplab.stopped"] == "deadline"
    assert until <= stopped.datetime_complete < until + dt.timedelta(seconds=15)
    (retry,) = study.get_trials(states=(TrialState.WAITING,))  # queued for the next night
    assert retry.system_attrs["fixed_params"] == stopped.params
    assert not study.get_trials(states=(TrialState.RUNNING,))
    runs = mlflow_runs(workdir)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (run,) = [r for r in runs if r.data.tags.get("sweeplab.kind") == "run"]
    assert run.info.status == "KILLED" and run.data.tags["sweeplab.state"] == "STOPPED"
    assert "stopped at the deadline" in run.data.tags["sweeplab.reason"]
    assert summary["tonight"]["stopped"] == 1 and summary["tonight"]["failed"] == 0
    assert "| stopped at the deadline (run again next night) | 1 | 1 |" in report_of(proc).read_text()


@pytest.mark.timeout(390)  # nightly_cli 300 + 30, + 60
def test_sweep_killed_in_the_night_exits_non_zero_and_still_reports(workdir: Path):
    # The first trial's model SIGKILLs the sweep process itself (n_jobs=1: trials run in it).
    args = ["default", "--hours", "1", "model._target_=tests.helpers.SelfKillingMLP", "+model.die=true"]
    proc = nightly_cli(args, cwd=workdir)
    assert proc.returncode == 128 + 9, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = report_of(proc).read_text()
    assert "exit code 137 (**the sweep broke**" in text and "No trial has completed yet." in text
    assert "- 1 x `its worker stopped (stale trial)`" in text, text
    study = load_study(workdir)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.get_trials(states=(TrialState.WAITING,))  # queued again for the next night
    limit = time.monotonic() + 30  # the tracking process closes the runs when it sees its parent gone
    while [r for r in mlflow_runs(workdir) if r.info.status == "RUNNING"] and time.monotonic() < limit:
        time.sleep(0.5)
    assert not [r for r in mlflow_runs(workdir) if r.info.status == "RUNNING"]


@pytest.mark.timeout(1260)  # three nightly_cli 300 + cron's 300, + 60
def test_installed_crontab_line_runs_as_cron_would(workdir: Path, tmp_path: Path):
    crontab = tmp_path / "crontab"
    crontab.write_text("MAILTO=someone\n")
    plan_args = ["--hours", "0.2", "hydra.sweeper.n_trials=1", "trainer.max_epochs=2"]
    args = ["install", "default", "--at", "22:00", "--crontab-file", str(crontab), "--dir", str(workdir)]
    proc = nightly_cli([*args, *plan_args], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = crontab.read_text().splitlines()
    assert lines[0] == "MAILTO=someone" and lines[1].startswith("# sweeplab nightly default ")
    entry = lines[2]
    assert entry in proc.stdout  # it prints what it writes
    assert entry.startswith("0 22 * * * ") and "%" not in entry
    command = entry.split(" ", 5)[5]

    # As cron runs it: from /, with a minimal environment and /bin/sh.
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", command],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log = (workdir / "mlruns" / "nightly" / "default.log").read_text()
    assert "report: " in log, log[-3000:]
    assert Path(log.split("report: ")[-1].strip()).exists()
    assert len(load_study(workdir).get_trials(states=(TrialState.COMPLETE,))) == 1

    listed = nightly_cli(["list", "--crontab-file", str(crontab)], cwd=tmp_path)
    assert entry.split(" ", 5)[5] in listed.stdout
    removed = nightly_cli(
        ["uninstall", "default", "--crontab-file", str(crontab), "--dir", str(workdir)], tmp_path
    )
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert crontab.read_text().splitlines() == ["MAILTO=someone"]


def test_systemd_timer_files_are_written_and_removed(tmp_path: Path):
    units = tmp_path / "units"
    where = ["--systemd", "--systemd-dir", str(units), "--dir", str(tmp_path)]
    proc = nightly_cli(["install", "default", "--at", "21:30", "--hours", "8", *where], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (timer,) = units.glob("sweeplab-nightly-default-*.timer")
    (service,) = units.glob("sweeplab-nightly-default-*.service")
    assert "OnCalendar=*-*-* 21:30:00" in timer.read_text()
    text = service.read_text()
    assert "ExecStart=/bin/sh -c " in text and "-m sweeps.nightly default --hours 8.0" in text
    assert text in proc.stdout
    assert str(timer) in nightly_cli(["list", "--systemd-dir", str(units)], tmp_path, timeout=60).stdout
    removed = nightly_cli(["uninstall", "default", *where], cwd=tmp_path, timeout=60)
    assert removed.returncode == 0 and not list(units.iterdir())


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_gets_the_summary_and_its_url_is_never_written(workdir: Path):
    token = "Hook-Canary-7f3a9"
    server = http.server.HTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hooks/{token}"
    try:
        proc = nightly_cli(
            ["default", "--hours", "0.2", "hydra.sweeper.n_trials=1", "trainer.max_epochs=2"],
            cwd=workdir,
            env={webhook.ENV: url},
        )
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "webhook: sent" in proc.stdout
    ((path, sent),) = Hook.received
    assert path == f"/hooks/{token}"
    assert sent["plan"] == "default" and sent["best"]["value"] > 0 and sent["tonight"]["complete"] == 1
    assert sent["text"].startswith("sweeplab nightly default")
    assert token not in proc.stdout + proc.stderr
    for file in (workdir / "mlruns").rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file


def test_webhook_failure_is_one_line_without_the_url(monkeypatch: pytest.MonkeyPatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv(webhook.ENV, f"http://127.0.0.1:{port}/hooks/Hook-Canary-2")
    summary = {
        "plan": "p",
        "night": "n",
        "metric": "m",
        "exit_code": 0,
        "best": None,
        "tonight": dict.fromkeys(("complete", "pruned", "failed"), 0),
    }
    line = webhook.notify(summary, timeout=5)
    assert line.startswith("webhook: not sent") and "Canary" not in line and str(port) not in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--hours", "1"], "no plan 'nope'"),
        (["default", "--until", "25:99"], "--until 25:99: expected a time of day"),
        (["default", "--hours", "0"], "--hours 0.0: must be above 0"),
        (["default", "--hours", "1", "optimizer=nope"], "plan default:"),
        (["install", "default", "--at", "9pm", "--crontab-file", "ct"], "--at 9pm"),
    ],
)
def test_bad_input_fails_with_one_line(workdir: Path, args: list[str], message: str):
    proc = nightly_cli(args, cwd=workdir, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (workdir / "mlruns").exists()
    assert not (workdir / "ct").exists()


def test_deadline_parsing():
    now = dt.datetime(2026, 11, 22, 21, 0).astimezone()
    assert clock.parse("07:00", now=now) == now.replace(day=23, hour=7)
    assert clock.parse("23:30", now=now) == now.replace(hour=23, minute=30)
    assert clock.parse(hours=0.25, now=now) == now + dt.timedelta(minutes=15)


def test_dated_study_when_the_plan_asks_for_a_new_one_each_night():
    night = dt.datetime(2026, 11, 22, 22, 0)
    plan = nightly.compose("default", [])
    assert nightly.study_name(plan.hydra.sweeper, "default", night) == "nightly-default"
    dated = nightly.compose("default", ["hydra.sweeper.nightly.new_study_each_night=true"])
    assert nightly.study_name(dated.hydra.sweeper, "default", night) == "nightly-default-2026-11-22"


def test_report_counts_failures_with_their_reasons_and_compares_nights(tmp_path: Path):
    study = optuna.create_study(direction="maximize")
    started = dt.datetime.now().astimezone() - dt.timedelta(seconds=1)
    for value, reason in ((0.5, ""), (None, "non-finite loss (nan) at step 3"), (0.7, ""), (None, "x")):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        if value is None:
            trial.set_user_attr("sweeplab.reason", reason)
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    night = {
        "plan": "p",
        "night": "2026-11-23",
        "study": "s",
        "started": started.isoformat(),
        "deadline": started.isoformat(),
        "ended": started.isoformat(),
        "exit_code": 0,
        "overrides": [],
    }
    previous = {"night": "2026-11-22", "study": "s", "best": {"value": 0.6}, "study_totals": {"finished": 1}}
    summary = nightly_report.summarize(study, night, 10, "val_acc", previous)
    assert summary["tonight"] == {"complete": 2, "pruned": 0, "failed": 2, "stopped": 0, "started": 4}
    assert summary["failure_reasons"] == {"non-finite loss (nan) at step 3": 1, "x": 1}
    assert summary["changes"]["new_best"] and summary["changes"]["trials_added"] == 1
    assert summary["changes"]["best_delta"] == pytest.approx(0.1)
    text = nightly_report.markdown(summary, {})
    assert (
        "- 1 x `non-finite loss (nan) at step 3`" in text and "**new best**: val_acc 0.7000 (+0.1000" in text
    )
    worse = nightly_report.changes(summary, {**previous, "best": {"value": 0.9}})
    assert not worse["new_best"] and worse["best_delta"] == pytest.approx(-0.2)


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_the_old_group_name_composes_the_same_plan():
    """``schedule`` (the plans' group before it became ``plan``, apart from ``scheduler``) still picks it."""
    old, new = composed("schedule=default"), composed("plan=default")
    assert new.hydra.sweeper.n_trials == 300 and new.trainer.max_epochs == 15  # the plan, not the defaults
    assert OmegaConf.masked_copy(old, [k for k in old if k != "hydra"]) == OmegaConf.masked_copy(
        new, [k for k in new if k != "hydra"]
    )
    assert old.hydra.sweeper == new.hydra.sweeper
    assert dict(old.hydra.runtime.choices) == {**new.hydra.runtime.choices, "schedule": "default"}
    (note,) = renames.notes(old.hydra.runtime.choices)
    assert note.startswith("note: the config group `schedule` is now `plan`") and "use plan=default" in note
    assert renames.notes(new.hydra.runtime.choices) == []


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "multirun"])
def test_the_old_group_name_says_the_new_one_once(workdir: Path, sweep: bool):
    args = ["schedule=default", "tracking=off", *ONE_BATCH]
    proc = run_cli(["-m", *args, "hydra.sweeper.n_trials=2"] if sweep else args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes == renames.notes({"schedule": "default"}), proc.stderr[-3000:]


def test_a_plan_left_under_the_old_name_is_found_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture):
    for group, plan in (("plan", "new"), ("schedule", "old")):
        (tmp_path / group).mkdir()
        (tmp_path / group / f"{plan}.yaml").write_text("# @package _global_\n")
    assert nightly.plan_file("new", tmp_path) == tmp_path / "plan" / "new.yaml"
    assert capsys.readouterr().err == ""
    assert nightly.plan_file("old", tmp_path) == tmp_path / "schedule" / "old.yaml"
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: nightly plans are the `plan` group now: move ") and "old.yaml" in line
    with pytest.raises(ConfigError, match=r"no plan 'gone' in .*plan \(plans: new, old\)"):
        nightly.find_plan("gone", tmp_path)
    assert nightly.plan_override("default") == "plan=default"  # the real conf/: the new group first
