"""Torch threads per process when trial workers or DDP ranks share the machine's cores (issue 35: two
workers each with torch's default thread count made a 0.3 s training take 1.7-7 s on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sweeps.launch.ddp import ranks
from sweeps.support import threads
from tests.conftest import cli_env


def test_each_of_n_processes_gets_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(threads.ENV, "8")  # a worker's share: 8 cores
    assert threads.environment(3) == {"OMP_NUM_THREADS": "2", threads.ENV: "2"}
    assert threads.environment(16) == {"OMP_NUM_THREADS": "1", threads.ENV: "1"}
    assert "8 cores: 4 torch thread(s) each" in threads.describe(2, "trial workers")


def test_the_users_own_omp_num_threads_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.environment(2) == {}
    assert "OMP_NUM_THREADS=3" in threads.describe(2, "trial workers")


def test_a_ddp_trainer_counts_its_processes() -> None:
    assert ranks(OmegaConf.create({"devices": 3})) == 3
    assert ranks(OmegaConf.create({"devices": [0, 1]})) == 2
    assert ranks(OmegaConf.create({"devices": "auto"})) == 1


def search_recording_threads(folder: Path, *overrides: str) -> tuple[str, list[dict]]:
    """A real 2-trial search in ``folder``, torch's defaults left alone (no OMP_NUM_THREADS), whose trials
    record their torch threads and collector state (``tests.helpers.ThreadsMLP``): its output and the
    records, one per training process."""
    record = folder / "threads"
    record.mkdir()
    args = [
        "-m",
        "lr=interval(1e-3, 1e-2)",
        "hydra.sweeper.n_trials=2",
        "hydra/sweeper/pruner=none",
        "model._target_=tests.helpers.ThreadsMLP",
        f"+model.record={record}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "checkpoint=false",
        *overrides,
    ]
    env = {k: v for k, v in cli_env().items() if k not in ("OMP_NUM_THREADS", threads.ENV)}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.run", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr, [json.loads(p.read_text()) for p in record.glob("*.json")]


@pytest.mark.slow
def test_two_workers_train_with_half_the_cores_each(tmp_path: Path) -> None:
    """A real sweep with ``n_jobs=2``: each trial trains with cores // 2 intra- and inter-op threads, and the
    log says so once."""
    said, counts = search_recording_threads(tmp_path, "hydra.sweeper.n_jobs=2", "tracking=off")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert counts and all((c["intra"], c["inter"]) == (share, share) for c in counts), counts
    # each worker imported with the collector off, then froze what it imported and turned it back on
    assert all(c["gc"] and c["frozen"] > 100_000 for c in counts), counts
    assert said.count("2 trial workers on") == 1, said[-3000:]
    # forked from the sweep's process once it had imported torch: no worker imported it again
    assert len(counts) == 2 and not any(c["spawned"] for c in counts), counts
    assert len({c["parent"] for c in counts}) == 1, counts


def test_training_beside_the_tracking_process_leaves_it_a_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert threads.beside_tracking(True) == 7
    assert threads.beside_tracking(False) is None  # tracking off: torch's own count
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert threads.beside_tracking(True) == 1
    monkeypatch.setenv(threads.ENV, "4")  # a trial worker: it has its share from the sweep
    assert threads.beside_tracking(True) is None
    monkeypatch.delenv(threads.ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own count
    assert threads.beside_tracking(True) is None


@pytest.mark.slow
def test_a_search_in_one_process_trains_on_all_cores_but_the_tracking_processs(tmp_path: Path) -> None:
    """A real ``n_jobs=1`` search with tracking on: its trials train with one core fewer than the machine
    has (the tracking process writes beside them), said once; start-up ran without the garbage collector,
    which the trials have back with start-up's objects frozen."""
    said, counts = search_recording_threads(tmp_path)
    [count] = counts  # both trials in this process
    assert count["intra"] == max(1, len(os.sched_getaffinity(0)) - 1), count
    assert count["gc"] and count["frozen"] > 100_000, count
    assert said.count("one left to the tracking process") == 1, said[-3000:]
