"""Start-up without the garbage collector (issue 35: the collector's full passes over half a million imported
objects took about 1 s of a 4 s start on 2 cores); ``resume`` freezes start-up's objects and turns it on."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import cli_env

PROBE = """
import gc, json
from sweeps.support import startup_gc
seen = {"before": gc.isenabled()}
startup_gc.resume()  # not paused: nothing to do
seen["resumed_unpaused"] = [gc.isenabled(), gc.get_freeze_count()]
startup_gc.pause()
seen["paused"] = gc.isenabled()
startup_gc.resume()
seen["resumed"] = [gc.isenabled(), gc.get_freeze_count() > 0]
gc.unfreeze()
startup_gc.resume()  # once only: a second call freezes nothing
seen["again"] = gc.get_freeze_count()
print(json.dumps(seen))
"""


def test_pause_turns_the_collector_off_and_resume_freezes_and_turns_it_on_once() -> None:
    # A fresh interpreter: gc.freeze() in the test process would stay for the whole session.
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=cli_env(), capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(proc.stdout)
    assert seen == {
        "before": True,
        "resumed_unpaused": [True, 0],
        "paused": False,
        "resumed": [True, True],
        "again": 0,
    }
