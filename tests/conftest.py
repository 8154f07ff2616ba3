"""Shared helpers: compose configs the way the CLI does, and run the CLI as a real subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# One torch thread per process, the tests' subprocesses included (they inherit it): `make test` runs two
# pytest workers, and two workers each training on every core only wait on each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def cli_env(env: dict | None = None) -> dict:
    """The environment of a command run as a user would: this checkout importable, Hydra's short errors."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}


def run_cli(
    args: Sequence[str],
    cwd: Path,
    timeout: float = 240,
    env: dict | None = None,
    module: str = "sweeps.run",
) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` (``sweeps.run`` unless told) in ``cwd`` (so that mlruns/ lands there), as a
    user would run it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args: Sequence[str], cwd: Path, module: str = "sweeps.run", **popen: Any) -> subprocess.Popen:
    """The same command left running (output piped, as text, unless ``popen`` says otherwise)."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(), **popen)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder to run the CLI in; its mlruns/ is the store."""
    return tmp_path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    """Until ``url`` answers; an error with the server's log if ``proc`` ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError as err:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start: {log.read_text()}") from err
            time.sleep(0.5)


@contextlib.contextmanager
def mlflow_server(folder: Path, store: Path | None = None, timeout: float = 90) -> Iterator[str]:
    """A real ``mlflow server`` on loopback over a SQLite store (``store``, or a new one in ``folder``)."""
    port = free_port()
    log = (folder / "server.log").open("w")
    backend = f"sqlite:///{store or folder / 'server.db'}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", backend, "--artifacts-destination", str(folder / "artifacts")]
    proc = subprocess.Popen(
        command + ["--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", proc, timeout, "mlflow server", folder / "server.log")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# The slow tier (``make test`` runs it, ``make test-fast`` does not): every test that runs the CLI (the
# ``workdir`` fixture), and the modules that train to the end, start servers or run Hydra's suites.
SLOW_MODULES = {
    "test_bad_input",
    "test_cli",
    "test_configs",
    "test_ddp",
    "test_finetune",
    "test_gpu",
    "test_hydra_suites",
    "test_own_errors",
    "test_own_project",
    "test_own_wheel",
    "test_scale",
    "test_search",
    "test_slurm",
    "test_tracking",
    "test_tracking_client",
    "test_training",
    "test_ui",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module in SLOW_MODULES or "workdir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
