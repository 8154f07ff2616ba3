"""Shared helpers: compose configs the way the CLI does, and run the CLI as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# One batch of one epoch: enough to show that a configuration builds and trains.
ONE_BATCH = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "checkpoint=false",
    "trainer.progress=none",
]


def compose_cfg(overrides: Sequence[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(args: Sequence[str], cwd: Path, timeout: float = 240, env: dict | None = None):
    """``python -m sweeps.run ARGS`` in ``cwd`` (so that mlruns/ lands there), as a user would run it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sweeps.run", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder to run the CLI in; its mlruns/ is the store."""
    return tmp_path
