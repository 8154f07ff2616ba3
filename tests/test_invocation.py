"""The stored command names what the user typed, in the process they started and in the processes a sweep
starts (they read it from the environment, but only from a sweep that started them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sweeps.support import invocation

SHOW = "from sweeps.support.invocation import command; print(command(['lr=0.1']))"


@pytest.mark.slow
def test_a_process_the_sweep_started_names_the_sweeps_command_and_a_stale_one_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(sys, "argv", ["/somewhere/train.py", "--config-dir", "conf", "-m", "x=1,2"])
    invocation.remember()
    child = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, check=True)
    assert child.stdout.split() == [
        "python",
        "/somewhere/train.py",
        "--config-dir",
        os.path.abspath("conf"),
        "lr=0.1",
    ]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = {**json.loads(os.environ[invocation.ENV]), "pid": gone.pid}  # a command that did not start it
    monkeypatch.setenv(invocation.ENV, json.dumps(stale))
    child = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, check=True)
    assert child.stdout.split() == ["python", "-c", "lr=0.1"]
    monkeypatch.delenv(invocation.ENV)
