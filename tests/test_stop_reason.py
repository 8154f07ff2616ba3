"""Why a search stopped, as the study and the parent run keep it (``sweeplab.stop_reason``): a night ended by
``python -m sweeps.nightly stop`` says "stop requested", not "no trial left to run"."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from optuna.samplers import RandomSampler

from sweeps.search.study import open_study
from sweeps.support.stop_file import STOP_FILE_ENV
from sweeps.sweeper.ledger import Ledger
from sweeps.sweeper.settings import SweeplabSettings


@pytest.mark.parametrize(
    ("deadline_in", "stop_file_in", "why"),
    [(3600, -1, "stop requested"), (-1, None, "deadline reached")],
)
def test_a_deadline_or_a_stop_request_is_the_stop_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deadline_in: float, stop_file_in: float | None, why: str
):
    if stop_file_in is not None:
        stop = tmp_path / "stop"
        stop.write_text(str(time.time() + stop_file_in))  # what ``sweeps.nightly stop`` writes
        monkeypatch.setenv(STOP_FILE_ENV, str(stop))
    settings = SweeplabSettings(storage=str(tmp_path / "optuna.journal"), deadline=time.time() + deadline_in)
    ref = open_study(settings.storage_url, "night", "max", RandomSampler(seed=0), None)
    ledger = Ledger(ref, settings, "val_acc")
    assert not ledger.may_start()
    assert ledger.stop_reason == why
