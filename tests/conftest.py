"""Shared helpers: compose configs the way the CLI does, and run the CLI (in this process, or a real one)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import subprocess as _subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# One torch thread per process, the tests' subprocesses included (they inherit it): `make test` runs two
# pytest workers, and two workers each training on every core only wait on each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Hugging Face: nothing is downloaded in the tests (a model or dataset that is not here fails at once).
# huggingface_hub and datasets read these once, when imported: set before any test imports them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

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
    *,
    subprocess: bool = False,
) -> _subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` (``sweeps.run`` unless told) in ``cwd`` (so that mlruns/ lands there), as a
    user would run it: its ``main`` called in this process for the modules in ``IN_PROCESS`` (a new
    interpreter pays 6-9 s of imports), a real process with ``subprocess=True`` (a test of the process
    boundary) or for any other module. ``timeout`` binds a real process; a call here has the test's own."""
    if subprocess or module not in IN_PROCESS:
        return _subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env=cli_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return run_in_process(args, cwd, env, module)


# The commands that run_cli calls in this process: their ``main`` reads sys.argv and returns or raises
# SystemExit. Not sweeps.nightly or sweeps.benchmark: they own processes (a lock by pid, SIGTERM forwarded,
# sweeps as children), and their own start-up is cheap beside the sweeps they start.
IN_PROCESS = {"sweeps.run", "sweeps.compare"}
# The signal handlers a command may install (preemption, Ctrl-C): put back after each call.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# The warning filters of a new interpreter (no -W): pytest's own (which ignore UserWarning) would hide the
# warnings a command prints, Lightning's among them.
FRESH_FILTERS = [
    ("default", None, DeprecationWarning, "__main__", 0),
    ("ignore", None, DeprecationWarning, None, 0),
    ("ignore", None, PendingDeprecationWarning, None, 0),
    ("ignore", None, ImportWarning, None, 0),
    ("ignore", None, ResourceWarning, None, 0),
]


def run_in_process(
    args: Sequence[str], cwd: Path, env: dict | None = None, module: str = "sweeps.run"
) -> _subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` as a call of ``MODULE.main`` here, with what the process would have had
    (cwd, environment, argv, warning filters, its output and exit code) and this process as it was after.

    Output is caught at the file descriptors: the helpers a command starts (the tracking process, trial
    workers, DDP ranks) write to fds 1 and 2 themselves. A KeyboardInterrupt (or pytest's timeout) is not
    an exit code: it goes on up, the output so far printed to this test's own.
    """
    main = importlib.import_module(module).main
    spec = importlib.util.find_spec(module)
    program = spec.origin if spec and spec.origin else module
    # Hydra finds sweeps.run's conf/ beside the file of ``__main__``; imported, it would look for a package.
    environ = {**cli_env(env), "HYDRA_MAIN_MODULE": "__main__"} if module == "sweeps.run" else cli_env(env)
    output: dict[str, str] = {}
    try:
        with _as_a_process(cwd, environ, [program, *args]), _fd_capture(output):
            code = _run_main(main)
    except BaseException:
        sys.stdout.write(output.get("stdout", ""))
        sys.stderr.write(output.get("stderr", ""))
        raise
    return _subprocess.CompletedProcess(
        [sys.executable, "-m", module, *args], code, output["stdout"], output["stderr"]
    )


def _run_main(main: Any) -> int:
    """What the process would exit with: ``main``'s return value as ``sys.exit`` reads it; 1 after an
    uncaught exception, printed as Python prints it."""
    try:
        return _exit_code(main())
    except SystemExit as done:
        return _exit_code(done.code)
    except Exception:  # noqa: BLE001 - the process would print it and exit 1
        traceback.print_exc()
        return 1


def _exit_code(done: object) -> int:
    """The exit status of ``sys.exit(done)``: None is 0, a number itself, anything else printed and 1."""
    if done is None:
        return 0
    if isinstance(done, int):
        return done
    print(done, file=sys.stderr)
    return 1


@contextlib.contextmanager
def _as_a_process(cwd: Path, environ: dict[str, str], argv: list[str]) -> Iterator[None]:
    """cwd, environment, argv and PYTHONPATH's folders on sys.path as a new process would have them, and a
    new interpreter's warning filters; afterwards, what a command leaves behind in this process put back:
    those, the logging configuration (Hydra's job logging replaces the root handlers, one of them on the
    job's log file), the signal handlers, torch's thread count and Hydra's global state."""
    saved_cwd, saved_argv, saved_env, saved_path = os.getcwd(), sys.argv, dict(os.environ), list(sys.path)
    saved_signals = {s: signal.getsignal(s) for s in SIGNALS}
    restore_logging = _logging_state()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    os.environ.update(environ)
    os.chdir(cwd)
    sys.argv = argv
    sys.path[:0] = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            warnings.filters.extend(FRESH_FILTERS)
            warnings.showwarning = _show_warning
            yield
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        os.environ.update(saved_env)
        for sig, handler in saved_signals.items():
            if handler is not None:
                signal.signal(sig, handler)
        restore_logging()
        if torch and threads and "torch" in sys.modules:
            torch.set_num_threads(threads)
        _reset_globals()


def _reset_globals() -> None:
    """What a process ends with and the next command must not see: Hydra's global instance (``compose``
    refuses to start while one is set). sweeplab keeps no trial, run, deadline or session in globals."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


def _show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A warning printed to stderr, as a new interpreter does (pytest's recorder would keep it)."""
    text = warnings.formatwarning(message, category, filename, lineno, line)
    (file or sys.stderr).write(text)


def _loggers() -> list[logging.Logger]:
    manager = logging.Logger.manager
    return [logging.root, *(lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger))]


@pytest.fixture(autouse=True)
def _log_filters_put_back() -> Iterator[None]:
    """The loggers' filters as they were before each test: a test that calls a sweeper directly (not through
    ``run_cli``, which puts back the whole logging state) must not leave a sweep's quiet filters (epoch lines
    dropped) on the tests after it."""
    for name in ("sweeplab", "hydra._internal.core_plugins.basic_launcher"):
        logging.getLogger(name)  # exists from now on, so its filters are saved
    saved = {logger: list(logger.filters) for logger in _loggers()}
    yield
    for logger, filters in saved.items():
        logger.filters[:] = filters


def _logging_state() -> Callable[[], None]:
    """A function that puts every logger that exists now back as it is now (level, handlers, filters,
    propagation, disabled; a handler added since is closed), so that nothing logs to a closed job log file
    later and a sweep's quiet filters do not outlive it."""
    saved = [
        (lg, lg.level, list(lg.handlers), list(lg.filters), lg.propagate, lg.disabled) for lg in _loggers()
    ]
    disabled_below = logging.root.manager.disable

    def restore() -> None:
        for logger, level, handlers, filters, propagate, disabled in saved:
            for handler in [h for h in logger.handlers if h not in handlers]:
                logger.removeHandler(handler)
                handler.close()
            logger.handlers[:] = handlers
            logger.filters[:] = filters
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
        logging.disable(disabled_below)

    return restore


def _stream_handlers() -> list[logging.StreamHandler]:
    """Every handler of a logger that writes to a stream it holds (not a file), once each. A handler whose
    stream is a property (the standard library's stderr handler, which dill, imported by datasets, puts on
    its logger) writes to whatever ``sys.stderr`` is at the time: nothing to move."""
    found = [h for lg in _loggers() for h in lg.handlers if isinstance(h, logging.StreamHandler)]
    held = (h for h in found if not isinstance(getattr(type(h), "stream", None), property))
    return list(dict.fromkeys(h for h in held if not isinstance(h, logging.FileHandler)))


def _redirect(handlers: list[logging.StreamHandler], to: dict[int, Any]) -> list[tuple[Any, Any]]:
    """Each handler whose stream is a key of ``to`` (by id) onto that stream; (handler, stream before) of
    those moved. A ``flush`` bound to the old stream moves too (Optuna binds its handler's to stderr's)."""
    moved = []
    for handler in handlers:
        target = to.get(id(handler.stream))
        if target is None:
            continue
        flush = vars(handler).get("flush")
        if flush is not None and getattr(flush, "__self__", None) is handler.stream:
            handler.flush = target.flush  # type: ignore[method-assign]
        moved.append((handler, handler.stream))
        handler.setStream(target)
    return moved


@contextlib.contextmanager
def _fd_capture(output: dict[str, str]) -> Iterator[None]:
    """fds 1 and 2 onto temporary files, sys.stdout and sys.stderr line-buffered on them, and the logging
    handlers that write to this process's stdout or stderr (Optuna's, made at its import) onto those; all
    put back afterwards (a handler made meanwhile onto this process's), and what was written left in
    ``output`` (``stdout``, ``stderr``)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    streams = {1: sys.stdout, 2: sys.stderr}
    originals = {1: sys.__stdout__, 2: sys.__stderr__}
    saved_fds = {fd: os.dup(fd) for fd in streams}
    files = {fd: tempfile.TemporaryFile() for fd in streams}
    for fd, file in files.items():
        os.dup2(file.fileno(), fd)
    ours = {
        fd: open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        for fd in streams
    }
    to_ours = {id(s): ours[fd] for fd in streams for s in (streams[fd], originals[fd]) if s is not None}
    moved = _redirect(_stream_handlers(), to_ours)
    sys.stdout, sys.stderr = ours[1], ours[2]
    try:
        yield
    finally:
        for stream in ours.values():
            stream.flush()
        for handler, stream in moved:
            _redirect([handler], {id(handler.stream): stream})
        _redirect(_stream_handlers(), {id(ours[fd]): streams[fd] for fd in streams})
        sys.stdout, sys.stderr = streams[1], streams[2]
        for fd, stream in ours.items():
            stream.close()
            os.dup2(saved_fds[fd], fd)
            os.close(saved_fds[fd])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            files[fd].seek(0)
            output[name] = files[fd].read().decode("utf-8", errors="replace")
            files[fd].close()


def start_cli(
    args: Sequence[str], cwd: Path, module: str = "sweeps.run", env: dict | None = None, **popen: Any
) -> subprocess.Popen:
    """The same command left running (output piped, as text, unless ``popen`` says otherwise); ``env`` is
    added to the command's environment."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(env), **popen)


@pytest.fixture(scope="session", autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The datasets cache (``HF_DATASETS_CACHE``: data=hf's loaded files and token ids) in the session's tmp,
    never the user's ``~/.cache``; data=hf reads it at each load, its subprocesses inherit it."""
    saved = os.environ.get("HF_DATASETS_CACHE")
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf-datasets-cache"))
    yield
    if saved is None:
        os.environ.pop("HF_DATASETS_CACHE", None)
    else:
        os.environ["HF_DATASETS_CACHE"] = saved


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
