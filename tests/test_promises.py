"""README promises that had no test of their own: the nightly deadline's median rule, the report's "train it
again" command, a webhook answering HTTP 500, the real `crontab` program, and a DDP rank crash inside a
search. (`systemctl --user` is not tested for real: it needs a user service manager, which CI machines and
containers do not run; tests/test_nightly.py checks the unit files it would enable.)"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import math
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.samplers import RandomSampler
from optuna.trial import TrialState, create_trial

from sweeps.nightly import webhook
from sweeps.search.study import open_study
from sweeps.support import stop_file
from sweeps.sweeper.ledger import Ledger
from sweeps.sweeper.settings import SweeplabSettings
from sweeps.training.context import JobContext
from tests.conftest import free_port, run_cli
from tests.test_ddp import runs
from tests.test_nightly import load_study, nightly_cli, report_of
from tests.test_search import studies


def _ledger_with_durations(tmp_path: Path, seconds: list[float], left: float) -> Ledger:
    """A real journal study holding completed trials that took ``seconds``, and a deadline ``left`` s away."""
    config = SweeplabSettings(storage=str(tmp_path / "optuna.journal"), deadline=time.time() + left)
    ref = open_study(config.storage_url, "night", "max", RandomSampler(seed=0), None)
    end = dt.datetime.now()
    for i, took in enumerate(seconds):
        trial = create_trial(
            state=TrialState.COMPLETE,
            value=0.5,
            params={"x": i / 10},
            distributions={"x": FloatDistribution(0, 1)},
        )
        trial.datetime_start, trial.datetime_complete = end - dt.timedelta(seconds=took), end
        ref.study.add_trial(trial)
    return Ledger(ref, config, "val_acc")


@pytest.mark.parametrize(
    ("seconds", "fits"),
    [
        # The median (20 s) fits in the 100 s left, although the mean (110 s) and the longest (300 s) do not.
        ([10, 20, 300], True),
        # The median (150 s) does not fit, although the shortest trial (50 s) would.
        ([50, 150, 160], False),
    ],
)
def test_no_trial_starts_unless_the_median_trial_fits_before_the_deadline(
    tmp_path: Path, seconds: list[float], fits: bool
):
    ledger = _ledger_with_durations(tmp_path, seconds, left=100)
    ledger.n_trials = 100
    assert ledger.may_start() is fits  # the search loops ask this before each trial (sweeper/trials.py)


def test_a_stop_file_moves_the_deadline_to_its_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """What ``python -m sweeps.nightly stop`` writes: the sweeper then starts no trial, and a job's deadline
    (``JobContext.current_deadline``, which the training callback reads) becomes the stop's time."""
    ledger = _ledger_with_durations(tmp_path, [10, 20, 30], left=3600)
    ledger.n_trials = 100
    job = JobContext(tmp_path, deadline=ledger.settings.deadline)
    stop = tmp_path / "stop"
    monkeypatch.setenv(stop_file.STOP_FILE_ENV, str(stop))
    assert ledger.may_start() and job.current_deadline() == ledger.settings.deadline  # named, not written
    at = time.time()
    stop.write_text(f"{at}\n")
    assert not ledger.may_start() and job.current_deadline() == at
    stop.write_text(f"{at + 7200}\n")  # a stop after the deadline changes nothing
    assert ledger.may_start() and job.current_deadline() == ledger.settings.deadline


class _Answers500(http.server.BaseHTTPRequestHandler):
    posted: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        _Answers500.posted.append(json.loads(self.rfile.read(length)))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_webhook_answering_http_500_is_said_in_one_line_without_the_url(monkeypatch: pytest.MonkeyPatch):
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _Answers500)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(webhook.ENV, f"http://127.0.0.1:{server.server_port}/hooks/Hook-Canary-500")
    summary = {
        "plan": "p",
        "night": "n",
        "metric": "val_acc",
        "exit_code": 0,
        "best": None,
        "tonight": dict.fromkeys(("complete", "pruned", "failed"), 0),
    }
    try:
        line = webhook.notify(summary, timeout=10)
    finally:
        server.shutdown()
    assert line == "webhook: not sent (the server answered HTTP 500)"
    assert [sent["plan"] for sent in _Answers500.posted] == ["p"]  # it did reach the server


@pytest.mark.timeout(720)  # nightly_cli 300 + run_cli 300, + 60 + margin
def test_the_reports_train_it_again_command_gives_the_best_trials_value(workdir: Path):
    night = ["default", "--hours", "0.2", "hydra.sweeper.n_trials=2", "trainer.max_epochs=2"]
    proc = nightly_cli(night, cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = report_of(proc).read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("Train it again: `")]
    command = shlex.split(line.removeprefix("Train it again: `").removesuffix("`"))
    assert command[:3] == ["python", "-m", "sweeps.run"] and "-m" not in command[3:]  # one run, not a sweep
    assert command[3] == "plan=default"  # the plan's group by its name now (``schedule`` was the old one)
    again = run_cli(command[3:], cwd=workdir, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]

    best = load_study(workdir).best_trial
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeplab")
    found = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"], max_results=1)
    (rerun,) = found
    assert "sweeplab.trial" not in rerun.data.tags  # the new single run, not one of the night's
    assert math.isclose(rerun.data.metrics["best_val_acc"], best.value, rel_tol=1e-6, abs_tol=1e-6)


@pytest.fixture
def users_crontab() -> Iterator[str]:
    """The real ``crontab`` program (Debian's ``cron``), with this user's crontab put back afterwards."""
    if not shutil.which("crontab"):
        if os.environ.get("CI"):
            pytest.fail("no crontab command under CI: .ci/run installs Debian's cron package")
        pytest.skip("no crontab command (apt-get install cron)")
    before = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    saved = before.stdout if before.returncode == 0 else None
    subprocess.run(["crontab", "-"], input="MAILTO=someone\n", text=True, check=True)
    try:
        yield "MAILTO=someone"
    finally:
        if saved is None:
            subprocess.run(["crontab", "-r"], capture_output=True)
        else:
            subprocess.run(["crontab", "-"], input=saved, text=True, check=True)


def test_install_list_and_uninstall_edit_the_real_crontab(users_crontab: str, workdir: Path, tmp_path: Path):
    env = {"SWEEPLAB_CRONTAB_FILE": ""}  # no file: the crontab command itself
    args = ["install", "default", "--at", "22:00", "--dir", str(workdir), "trainer.max_epochs=2"]
    proc = nightly_cli(args, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    installed = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
    lines = installed.splitlines()
    assert lines[0] == users_crontab and lines[1].startswith("# sweeplab nightly default ")
    entry = lines[2]
    assert entry.startswith("0 22 * * * ") and entry in proc.stdout
    assert str(workdir) in entry

    listed = nightly_cli(["list"], cwd=tmp_path, env=env, timeout=120)
    assert listed.returncode == 0 and entry.split(" ", 5)[5] in listed.stdout
    removed = nightly_cli(["uninstall", "default", "--dir", str(workdir)], tmp_path, env=env, timeout=120)
    assert removed.returncode == 0 and "removed" in removed.stdout
    after = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
    assert after.splitlines() == [users_crontab]


@pytest.mark.timeout(560)  # run_cli 500, + 60
def test_a_crashed_ddp_rank_inside_a_search_fails_its_trial_and_the_search_goes_on(workdir: Path):
    args = [
        "-m",
        "trainer=ddp_cpu",
        "model._target_=tests.helpers.SelfKillingMLP",
        "+model.die_rank=1",
        f"+model.die_once={workdir / 'died'}",  # rank 1 dies in the first trial; the next one trains
        "lr=interval(1e-3, 2e-3)",
        "hydra.sweeper.n_trials=1",
        "trainer.max_epochs=2",
        "early_stopping_patience=0",
    ]
    proc = run_cli(args, cwd=workdir, timeout=500, subprocess=True)  # DDP: a real process, as in test_ddp
    assert proc.returncode == 0, proc.stderr[-3000:]
    (study,) = studies(workdir)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["sweeplab.reason"]  # what the surviving rank saw, e.g. gloo's error
    _, children = runs(workdir)
    states = {r.data.tags["sweeplab.trial"]: r.info.status for r in children}
    assert states["1"] == "FINISHED"
    assert states["0"] in ("KILLED", "FAILED")  # closed, never left RUNNING
